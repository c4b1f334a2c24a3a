"""Use case: route an accepted referral, decide each disclosure, seal one delivery per recipient."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from hub.services.port import Clock, KeyVault, PlannedRoute, Router, RoutingPlan, StoredSeal
from schemas.envelope import ConsentSummary, DeliveryCreated, ReferralSubmitted


def delivery_id_for(referral_id: str, recipient_org: str) -> str:
    """Deterministic, so reprocessing after a crash yields the same delivery (idempotent projection)."""
    return "dlv-" + hashlib.sha256(f"{referral_id}|{recipient_org}".encode()).hexdigest()[:24]


def task_id_for(delivery_id: str) -> str:
    return "task-" + delivery_id.removeprefix("dlv-")


@dataclass(frozen=True)
class DisclosureOutcome:
    """What one recipient may see of a referral, or why it may see nothing."""

    allowed: bool
    view: dict[str, Any] | None = None
    categories: tuple[str, ...] = ()
    consent_ids: tuple[str, ...] = ()
    basis: str = ""
    reason_code: str = ""
    reason: str = ""
    review_required: bool = False
    expires_at: datetime | None = None


class DisclosurePolicy(Protocol):
    def current_consents(
        self, events: Sequence[ReferralSubmitted], now: datetime
    ) -> Sequence[Sequence[ConsentSummary] | None]: ...

    def decide(
        self,
        bundle: dict[str, Any],
        event: ReferralSubmitted,
        route: PlannedRoute,
        now: datetime,
        consents: Sequence[ConsentSummary] | None = None,
    ) -> DisclosureOutcome: ...


class IntakeOpener(Protocol):
    def open_intake(self, referral_id: str, token: str) -> bytes: ...


class DeliverySealing(Protocol):
    def seal_delivery(
        self,
        view: bytes,
        *,
        referral_id: str,
        delivery_id: str,
        recipient_org: str,
        consent_ids: tuple[str, ...],
        at: datetime,
    ) -> StoredSeal: ...


@dataclass(frozen=True)
class Refused:
    route: PlannedRoute
    outcome: DisclosureOutcome


@dataclass(frozen=True)
class Routed:
    event: ReferralSubmitted  # the referral routed
    at: datetime  # when
    plan: RoutingPlan
    deliveries: list[DeliveryCreated]
    refused: list[Refused] = field(default_factory=list)


class RouteReferral:
    def __init__(
        self,
        router: Router,
        clock: Clock,
        opener: IntakeOpener,
        disclosure: DisclosurePolicy,
        sealing: DeliverySealing,
        vault: KeyVault,
    ) -> None:
        self._router = router
        self._clock = clock
        self._opener = opener
        self._disclosure = disclosure
        self._sealing = sealing
        self._vault = vault

    def __call__(self, event: ReferralSubmitted, declined: tuple[str, ...] = ()) -> Routed:
        (outcome,) = self.many([(event, declined)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def many(self, items: Sequence[tuple[ReferralSubmitted, tuple[str, ...]]]) -> list[Routed | Exception]:
        """Route a batch: one consent lookup and one vault write for all of it.

        A referral that cannot be routed (its intake does not open, …) comes back as its exception
        in its place; the others go on. A failure of the lookup or the vault (the database) raises.
        """
        now = self._clock.now()
        events = [event for event, _ in items]
        consents = self._disclosure.current_consents(events, now)
        staged: list[_Staged | Exception] = []
        for (event, declined), current in zip(items, consents, strict=True):
            try:
                staged.append(self._stage(event, declined, current, now))
            except Exception as exc:  # this referral only; reported in its place
                staged.append(exc)
        seals = [seal for s in staged if not isinstance(s, Exception) for _, _, seal in s.allowed]
        stored = self._vault.put_many(seals)
        return [s if isinstance(s, Exception) else s.routed(stored, now) for s in staged]

    def _stage(
        self,
        event: ReferralSubmitted,
        declined: tuple[str, ...],
        consents: Sequence[ConsentSummary] | None,
        now: datetime,
    ) -> _Staged:
        bundle = orjson.loads(self._opener.open_intake(event.referral_id, event.sealed_bundle))
        plan = self._router.plan(event.facts, now, declined)
        staged = _Staged(event, plan)
        for route in plan.routes:
            outcome = self._disclosure.decide(bundle, event, route, now, consents)
            if not outcome.allowed or outcome.view is None:
                staged.refused.append(Refused(route, outcome))
                continue
            delivery_id = delivery_id_for(event.referral_id, route.recipient_org)
            seal = self._sealing.seal_delivery(
                orjson.dumps(outcome.view),
                referral_id=event.referral_id,
                delivery_id=delivery_id,
                recipient_org=route.recipient_org,
                consent_ids=outcome.consent_ids,
                at=now,
            )
            staged.allowed.append((route, outcome, seal))
        return staged


@dataclass
class _Staged:
    """A referral routed and sealed, its seals not yet stored."""

    event: ReferralSubmitted
    plan: RoutingPlan
    allowed: list[tuple[PlannedRoute, DisclosureOutcome, StoredSeal]] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    def routed(self, stored: dict[str, StoredSeal], now: datetime) -> Routed:
        event, plan = self.event, self.plan
        deliveries: list[DeliveryCreated] = []
        for route, outcome, sealed in self.allowed:
            seal = stored[sealed.delivery_id]  # the first seal written for this delivery
            deliveries.append(
                DeliveryCreated(
                    event_id=f"{seal.delivery_id}:created",
                    delivery_id=seal.delivery_id,
                    referral_id=event.referral_id,
                    task_id=task_id_for(seal.delivery_id),
                    recipient_org=route.recipient_org,
                    recipient_type=route.recipient_type,
                    sender_org=event.facts.source_org,
                    purpose=route.purpose,
                    legal_basis=outcome.basis or route.legal_basis,
                    categories=list(outcome.categories),
                    priority=route.priority,
                    risk_level=event.facts.risk_level,
                    reasons=list(event.facts.reasons),
                    rule_id=route.rule_id,
                    ruleset_version=plan.ruleset_version,
                    created_at=now,
                    ack_due=route.ack_due,
                    first_contact_due=route.first_contact_due,
                    decide_due=route.decide_due,
                    escalation=list(route.escalation),
                    sealed_view=seal.ciphertext,
                    view_key_id=seal.recipient_key_id,
                    town=event.facts.town,
                )
            )
        return Routed(event, now, plan, deliveries, list(self.refused))
