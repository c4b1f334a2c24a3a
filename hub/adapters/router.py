"""Router adapter: the interim single rule (deliver to the organisation the sender addressed)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from hub.services.port import PlannedRoute, RoutingPlan
from schemas.envelope import ReferralFacts

_PRIORITY_ACK = {
    "stat": timedelta(minutes=30),
    "asap": timedelta(hours=2),
    "urgent": timedelta(hours=24),
    "routine": timedelta(days=3),
}
_TYPES = (
    "street-centre",
    "district-centre",
    "district-office",
    "civil-affairs",
    "procuratorate",
    "police",
    "camhs",
    "school",
)


class AddressedRouter:
    version = "addressed-v1"

    def plan(self, facts: ReferralFacts, now: datetime, declined: Sequence[str] = ()) -> RoutingPlan:
        target = facts.requested_recipient
        if not target or target in declined:
            return RoutingPlan(
                routes=[],
                ruleset_version=self.version,
                matched=False,
                explanation=[{"rule": "addressed", "matched": False, "why": "no addressed recipient"}],
            )
        rtype = next((t for t in _TYPES if target.startswith(t)), "district-centre")
        route = PlannedRoute(
            recipient_org=target,
            recipient_type=rtype,
            purpose="treatment",
            legal_basis="consent",
            priority=facts.priority,
            rule_id="addressed",
            ack_due=now + _PRIORITY_ACK.get(facts.priority, timedelta(days=3)),
        )
        return RoutingPlan(
            routes=[route], ruleset_version=self.version, explanation=[{"rule": "addressed", "matched": True}]
        )
