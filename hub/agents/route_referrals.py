"""Stream step: referrals.submitted -> consent + routing -> deliveries.created (one per recipient).

Records are routed in batches (whatever arrived while the previous batch was handled): one
transaction for the batch's consent lookup, vault write and read-model rows, every delivery and
audit event produced before the one wait for the broker's acknowledgements. The deliveries are
projected into the read model in the same step, so a recipient's inbox shows them as soon as they
exist; ``deliveries.created`` carries them on for subscribers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Sequence

import faust
import orjson
from faust.types import EventT, StreamT

from hub.agents.consume import ROUTE_DEPTH, each_batch, observe_batch, retrying
from hub.agents.deadletter import send_dead_letter
from hub.agents.metrics import DELIVERIES, REFUSALS
from hub.agents.pipeline import PipelineServices
from hub.domain.error import HubError
from hub.services.auditing import break_glass_event, refusal_event, rule_change_event
from hub.services.routing import Routed
from schemas.audit import AuditEvent, disclosure_event
from schemas.envelope import ReferralSubmitted
from schemas.topic import DELIVERIES_CREATED, REFERRALS_SUBMITTED

log = logging.getLogger(__name__)

STEP = "route_referrals"


class NoRouteMatched(HubError):
    def __init__(self, referral_id: str) -> None:
        super().__init__(
            message=f"no routing rule matched {referral_id}; sent to the district centre's triage queue",
            code="no-route-matched",
            status=422,
        )


async def route_and_send(
    app: faust.App, services: PipelineServices, items: Sequence[tuple[ReferralSubmitted, tuple[str, ...]]]
) -> list[Routed | Exception]:
    """Route referrals (each with the organisations that declined it), project and send the outcome.

    Returns, in order, each referral's routing or the exception that stopped it, once the broker has
    acknowledged everything sent. A database outage is waited out for a while; then, and for any
    other failure of the batch as a whole, the batch falls back to one referral at a time so that
    only a referral that fails alone is reported.
    """
    outcomes, sent = await route_and_stage(app, services, items)
    try:
        await sent
    except Exception:  # the broker did not confirm: route again and wait (every effect is idempotent)
        return await _one_by_one(app, services, items)
    return outcomes


async def route_and_stage(
    app: faust.App, services: PipelineServices, items: Sequence[tuple[ReferralSubmitted, tuple[str, ...]]]
) -> tuple[list[Routed | Exception], Awaitable[None]]:
    """``route_and_send`` up to the point where only the broker's acknowledgements are awaited.

    Returns the outcomes and an awaitable that completes once every delivery and audit event sent
    has been acknowledged (and raises if one was not): the caller may route the next batch while
    this one's records are on their way, and commit the input offsets only after it completes.
    """
    if not items:
        return [], _nothing()
    try:
        return await retrying(lambda: _route_batch(app, services, items), STEP)
    except Exception:
        if len(items) == 1:
            raise
    outcomes = await _one_by_one(app, services, items)
    return outcomes, _nothing()


async def _one_by_one(
    app: faust.App, services: PipelineServices, items: Sequence[tuple[ReferralSubmitted, tuple[str, ...]]]
) -> list[Routed | Exception]:
    outcomes: list[Routed | Exception] = []
    for item in items:
        try:
            routed, sent = await retrying(lambda item=item: _route_batch(app, services, [item]), STEP)  # type: ignore[misc]
            await sent
            outcomes.extend(routed)
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


async def _nothing() -> None:
    return None


async def _route_batch(
    app: faust.App, services: PipelineServices, items: Sequence[tuple[ReferralSubmitted, tuple[str, ...]]]
) -> tuple[list[Routed | Exception], Awaitable[None]]:
    def route_and_project() -> list[Routed | Exception]:  # one hand-off to a thread, not two
        # One transaction: the consent lookup, the seals and the projection (a delivery's key, its
        # consent links and its inbox row commit together).
        with services.unit_of_work():
            outcomes = services.route.many(items)
            services.project.routed([o for o in outcomes if isinstance(o, Routed)])
        return outcomes

    outcomes = await asyncio.to_thread(route_and_project)
    routed = [o for o in outcomes if isinstance(o, Routed)]
    sink = _deliveries_topic(app, services)
    audit: list[AuditEvent] = []
    pending = []
    for r in routed:
        key = r.event.referral_id.encode()
        for delivery in r.deliveries:  # in order, one partition per referral
            pending.append(await sink.send(key=key, value=orjson.dumps(delivery.model_dump(mode="json"))))
            audit.append(disclosure_event(delivery))
            if delivery.legal_basis == "emergency":
                audit.append(break_glass_event(delivery))
        for x in r.refused:
            audit.append(
                refusal_event(
                    r.event.referral_id,
                    x.route.recipient_org,
                    x.route.purpose,
                    x.route.legal_basis,
                    x.outcome.reason_code,
                    r.at,
                )
            )
    # Sent now, acknowledged later: the input offsets are committed only once this completes
    # (at-least-once, nothing lost).
    recorded = asyncio.ensure_future(services.audit.record_many(audit))

    async def acknowledged() -> None:
        await asyncio.gather(*pending, recorded)
        for r in routed:
            for x in r.refused:
                REFUSALS.labels(x.outcome.reason_code or "unknown").inc()
            for delivery in r.deliveries:
                DELIVERIES.labels(delivery.legal_basis).inc()

    return outcomes, acknowledged()


_SINKS: weakref.WeakKeyDictionary[faust.App, dict[str, faust.TopicT]] = weakref.WeakKeyDictionary()


def _deliveries_topic(app: faust.App, services: PipelineServices) -> faust.TopicT:
    name = services.topic_name(DELIVERIES_CREATED.name)
    sinks = _SINKS.setdefault(app, {})
    sink = sinks.get(name)
    if sink is None:
        sink = sinks[name] = app.topic(name, value_serializer="raw", key_serializer="raw")
    return sink


def register_rules_reload(app: faust.App, services: PipelineServices) -> None:
    """Hot reload of the routing rules, in every worker that routes (routing step and re-routing)."""

    @app.timer(interval=services.rules_reload_seconds, name="reload_rules")
    async def reload_rules() -> None:
        # Hot reload: a bad edit keeps the last valid rule set running; either way it is audited.
        outcome = await asyncio.to_thread(services.reload_rules)
        if outcome is None:
            return
        if outcome.ok:
            log.warning(
                "routing rules reloaded", extra={"version": outcome.version, "previous": outcome.previous}
            )
        else:
            log.error("invalid routing rules kept out", extra={"issues": len(outcome.issues)})
        await services.audit.record(
            rule_change_event(
                outcome.version, outcome.previous, outcome.ok, services.clock.now(), len(outcome.issues)
            )
        )


def register(app: faust.App, services: PipelineServices) -> None:
    source = app.topic(
        services.topic_name(REFERRALS_SUBMITTED.name), value_serializer="raw", key_serializer="raw"
    )

    async def report(
        pairs: Sequence[tuple[EventT, ReferralSubmitted]],
        outcomes: Sequence[Routed | Exception],
        gaps: bool = True,
    ) -> int:
        failed = 0
        for (event, submitted), outcome in zip(pairs, outcomes, strict=True):
            if isinstance(outcome, Exception):
                failed += 1
                await send_dead_letter(app, services, STEP, event, outcome)
            elif gaps and not outcome.plan.matched:
                # Delivered to triage by the fallback, and recorded as a dead letter so operators
                # see that the rules have a gap: never silent.
                await send_dead_letter(app, services, STEP, event, NoRouteMatched(submitted.referral_id))
        return failed

    async def handle(events: list[EventT]) -> Awaitable[None]:
        start = time.perf_counter()
        decoded: list[tuple[EventT, ReferralSubmitted]] = []
        failed = 0
        for event in events:
            try:
                decoded.append((event, ReferralSubmitted.model_validate(orjson.loads(event.value))))
            except Exception as exc:  # not an intake envelope: a dead letter, the rest go on
                failed += 1
                await send_dead_letter(app, services, STEP, event, exc)
        outcomes, sent = await route_and_stage(app, services, [(submitted, ()) for _, submitted in decoded])
        failed += await report(decoded, outcomes)
        observe_batch(STEP, len(events) - failed, failed, time.perf_counter() - start)

        async def settle() -> None:
            # The next batch is routed while this one's records are acknowledged (each_batch acks
            # the input only after this). Unconfirmed: route those referrals again and wait.
            try:
                await sent
            except Exception as exc:
                log.warning("unconfirmed by the broker, routing again", extra={"error": type(exc).__name__})
                again = [(e, x) for (e, x), o in zip(decoded, outcomes, strict=True) if isinstance(o, Routed)]
                await report(
                    again, await route_and_send(app, services, [(x, ()) for _, x in again]), gaps=False
                )

        return settle()

    @app.agent(source, name=STEP)
    async def route_referrals(stream: StreamT) -> None:
        await each_batch(stream, handle, linger=services.route_linger_s, depth=ROUTE_DEPTH)
