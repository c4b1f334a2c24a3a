"""Stream step: referrals.submitted -> consent + routing -> deliveries.created (one per recipient)."""

from __future__ import annotations

import asyncio
import logging

import faust
import orjson

from hub.agents.deadletter import send_dead_letter
from hub.agents.metrics import DELIVERIES, REFUSALS, timed
from hub.agents.pipeline import PipelineServices
from hub.domain.error import HubError
from hub.services.auditing import break_glass_event, refusal_event, rule_change_event
from schemas.audit import disclosure_event
from schemas.envelope import ReferralSubmitted
from schemas.topic import DELIVERIES_CREATED, REFERRALS_SUBMITTED

log = logging.getLogger(__name__)


class NoRouteMatched(HubError):
    def __init__(self, referral_id: str) -> None:
        super().__init__(
            message=f"no routing rule matched {referral_id}; sent to the district centre's triage queue",
            code="no-route-matched",
            status=422,
        )


async def route_and_send(
    app: faust.App, services: PipelineServices, submitted: ReferralSubmitted, declined: tuple[str, ...] = ()
) -> bool:
    """Route one referral and produce its deliveries; True when some rule (not the fallback) matched."""
    sink = app.topic(
        services.topic_name(DELIVERIES_CREATED.name), value_serializer="raw", key_serializer="raw"
    )
    routed = await asyncio.to_thread(services.route, submitted, declined)
    now = services.clock.now()
    await asyncio.to_thread(services.project.referral, submitted, now, routed.plan.ruleset_version)
    for refused in routed.refused:
        await asyncio.to_thread(
            services.project.refusal,
            submitted.referral_id,
            refused.route.recipient_org,
            refused.outcome.reason_code,
            now,
        )
        await services.audit.record(
            refusal_event(
                submitted.referral_id,
                refused.route.recipient_org,
                refused.route.purpose,
                refused.route.legal_basis,
                refused.outcome.reason_code,
                now,
            )
        )
    key = submitted.referral_id.encode()
    pending = [
        await sink.send(key=key, value=orjson.dumps(d.model_dump(mode="json"))) for d in routed.deliveries
    ]
    # Wait for the broker before the input offset may be committed: at-least-once, nothing lost.
    await asyncio.gather(*pending)
    for refused in routed.refused:
        REFUSALS.labels(refused.outcome.reason_code or "unknown").inc()
    for delivery in routed.deliveries:
        DELIVERIES.labels(delivery.legal_basis).inc()
        await services.audit.record(disclosure_event(delivery))
        if delivery.legal_basis == "emergency":
            await services.audit.record(break_glass_event(delivery))
    return routed.plan.matched


def register(app: faust.App, services: PipelineServices) -> None:
    source = app.topic(
        services.topic_name(REFERRALS_SUBMITTED.name), value_serializer="raw", key_serializer="raw"
    )

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

    @app.agent(source, name="route_referrals")
    async def route_referrals(stream: faust.Stream) -> None:
        # Manual acks: faust acks the current event in a `finally` even when the agent is cancelled
        # (orderly worker stop), which would commit a referral cut off half-way. Ack once handled.
        manual = stream.noack()
        async for event in manual.events():
            try:
                with timed("route_referrals"):
                    submitted = ReferralSubmitted.model_validate(orjson.loads(event.value))
                    matched = await route_and_send(app, services, submitted)
                    if not matched:
                        # Delivered to triage by the fallback, and recorded as a dead letter so operators
                        # see that the rules have a gap: never silent.
                        await send_dead_letter(
                            app, services, "route_referrals", event, NoRouteMatched(submitted.referral_id)
                        )
            except Exception as exc:  # every failure becomes a dead letter; the partition moves on
                await send_dead_letter(app, services, "route_referrals", event, exc)
            await manual.ack(event)
