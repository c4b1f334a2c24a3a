"""Use case: route an accepted referral and emit one delivery per recipient."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from hub.services.port import Clock, PlannedRoute, Router, RoutingPlan
from schemas.envelope import DeliveryCreated, ReferralSubmitted


def delivery_id_for(referral_id: str, recipient_org: str) -> str:
    """Deterministic, so reprocessing after a crash yields the same delivery (idempotent projection)."""
    return "dlv-" + hashlib.sha256(f"{referral_id}|{recipient_org}".encode()).hexdigest()[:24]


def task_id_for(delivery_id: str) -> str:
    return "task-" + delivery_id.removeprefix("dlv-")


@dataclass(frozen=True)
class Routed:
    plan: RoutingPlan
    deliveries: list[DeliveryCreated]


class DeliverySealer:
    """Default seal hook producing no view; the crypto/consent adapters replace it (bootstrap)."""

    def view_for(self, event: ReferralSubmitted, route: PlannedRoute) -> tuple[str, str, tuple[str, ...]]:
        return "", "", route.categories


class RouteReferral:
    def __init__(self, router: Router, clock: Clock, sealer: DeliverySealer | None = None) -> None:
        self._router = router
        self._clock = clock
        self._sealer = sealer or DeliverySealer()

    def __call__(self, event: ReferralSubmitted) -> Routed:
        now = self._clock.now()
        plan = self._router.plan(event.facts, now)
        deliveries: list[DeliveryCreated] = []
        for route in plan.routes:
            delivery_id = delivery_id_for(event.referral_id, route.recipient_org)
            sealed, key_id, categories = self._sealer.view_for(event, route)
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
                    legal_basis=route.legal_basis,
                    categories=list(categories),
                    priority=route.priority,
                    risk_level=event.facts.risk_level,
                    reasons=list(event.facts.reasons),
                    rule_id=route.rule_id,
                    ruleset_version=plan.ruleset_version,
                    created_at=now,
                    ack_due=route.ack_due,
                    first_contact_due=route.first_contact_due,
                    sealed_view=sealed,
                    view_key_id=key_id,
                    town=event.facts.town,
                )
            )
        return Routed(plan=plan, deliveries=deliveries)


def explanation_summary(plan: RoutingPlan) -> list[dict[str, Any]]:
    return plan.explanation
