"""Use case: route an accepted referral, decide each disclosure, seal one delivery per recipient."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from hub.services.port import Clock, KeyVault, PlannedRoute, Router, RoutingPlan, StoredSeal
from schemas.envelope import DeliveryCreated, ReferralSubmitted


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
    def decide(
        self, bundle: dict[str, Any], event: ReferralSubmitted, route: PlannedRoute, now: datetime
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
        now = self._clock.now()
        bundle = orjson.loads(self._opener.open_intake(event.referral_id, event.sealed_bundle))
        plan = self._router.plan(event.facts, now, declined)
        deliveries: list[DeliveryCreated] = []
        refused: list[Refused] = []
        for route in plan.routes:
            outcome = self._disclosure.decide(bundle, event, route, now)
            if not outcome.allowed or outcome.view is None:
                refused.append(Refused(route, outcome))
                continue
            delivery_id = delivery_id_for(event.referral_id, route.recipient_org)
            seal = self._vault.put_once(
                self._sealing.seal_delivery(
                    orjson.dumps(outcome.view),
                    referral_id=event.referral_id,
                    delivery_id=delivery_id,
                    recipient_org=route.recipient_org,
                    consent_ids=outcome.consent_ids,
                    at=now,
                )
            )
            deliveries.append(
                DeliveryCreated(
                    event_id=f"{delivery_id}:created",
                    delivery_id=delivery_id,
                    referral_id=event.referral_id,
                    task_id=task_id_for(delivery_id),
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
        return Routed(plan=plan, deliveries=deliveries, refused=refused)
