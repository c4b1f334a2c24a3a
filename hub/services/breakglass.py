"""Use case: a supervisor reviews the emergency (break-glass) disclosures made at their agency's request.

DESIGN §3: an emergency disclosure needs no consent, but a supervisor reviews it afterwards and the
guardian is informed afterwards unless that endangers the child. The review records both as codes:
whether the use was justified, and whether the guardian was informed or why not. It is written to
the audit chain first (the audit topic's acknowledgement comes before anything else), then to the
read model, where the first review of a delivery wins; the dashboard counts uses and the share
reviewed.

Only the supervisors of the agency that sent the referral see and review its emergency disclosures;
to anybody else they do not exist (404), so delivery ids cannot be probed.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from hub.domain.error import Conflict, Forbidden, InvalidInput, NotFound
from hub.services.auditing import break_glass_review_event
from hub.services.port import Caller, Clock
from schemas.audit import AuditEvent

REVIEW_ROLES = frozenset({"supervisor"})
# Was invoking break-glass justified?
REVIEW_OUTCOMES = ("justified", "not-justified")
# Was the guardian told afterwards? "withheld-endangers-child": not told, because telling would
# endanger the child (the one exception DESIGN §3 allows).
GUARDIAN_NOTICES = ("informed", "withheld-endangers-child")
REVIEW_FILTERS = ("pending", "reviewed")


@dataclass(frozen=True)
class BreakGlassReview:
    delivery_id: str
    referral_id: str
    sender_org: str
    recipient_org: str
    outcome: str
    guardian_notice: str
    reviewed_by_role: str
    reviewed_by_user: str | None
    reviewed_at: datetime
    audit_event_id: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "referral_id": self.referral_id,
            "outcome": self.outcome,
            "guardian_notice": self.guardian_notice,
            "reviewed_by_role": self.reviewed_by_role,
            "reviewed_by_user": self.reviewed_by_user,
            "reviewed_at": self.reviewed_at,
        }


class BreakGlassStore(Protocol):
    def emergency_use(self, delivery_id: str) -> dict[str, Any] | None:
        """The emergency-basis delivery with this id (ids, codes, times), or None."""

    def uses(self, sender_org: str, status: str | None) -> list[dict[str, Any]]:
        """The agency's emergency-basis deliveries with their review (``review``: dict or None)."""

    def record(self, review: BreakGlassReview) -> bool:
        """Store the review unless the delivery has one; True when this call stored it."""

    def review_of(self, delivery_id: str) -> dict[str, Any] | None:
        """The stored review of a delivery, or None."""


class ReviewAudit(Protocol):
    async def record(self, event: AuditEvent) -> None:
        """Publish the audit event and wait for the broker's acknowledgement."""


class BreakGlassReviews:
    def __init__(self, store: BreakGlassStore, audit: ReviewAudit, clock: Clock) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock

    def uses(self, caller: Caller, status: str | None = None) -> list[dict[str, Any]]:
        _require_supervisor(caller)
        if status is not None and status not in REVIEW_FILTERS:
            raise InvalidInput(
                f"status must be one of {', '.join(REVIEW_FILTERS)} (or left out for both), not '{status}'",
                code="filter-invalid",
            )
        return self._store.uses(caller.org_id, status)

    async def review(
        self, caller: Caller, delivery_id: str, outcome: str, guardian_notice: str
    ) -> BreakGlassReview:
        _require_supervisor(caller)
        problems: list[dict[str, Any]] = []
        if outcome not in REVIEW_OUTCOMES:
            problems.append({"field": "outcome", "value": outcome, "allowed": list(REVIEW_OUTCOMES)})
        if guardian_notice not in GUARDIAN_NOTICES:
            problems.append(
                {"field": "guardian_notice", "value": guardian_notice, "allowed": list(GUARDIAN_NOTICES)}
            )
        if problems:
            names = " and ".join(p["field"] for p in problems)
            raise InvalidInput(f"unknown {names}", details=problems, code="review-invalid")
        use = await asyncio.to_thread(self._store.emergency_use, delivery_id)
        if use is None or use["sender_org"] != caller.org_id:
            raise NotFound(
                f"no emergency disclosure '{delivery_id}' requested by '{caller.org_id}'",
                code="break-glass-not-found",
            )
        earlier = await asyncio.to_thread(self._store.review_of, delivery_id)
        if earlier is not None:
            raise _already(delivery_id, earlier)
        review = BreakGlassReview(
            delivery_id=delivery_id,
            referral_id=use["referral_id"],
            sender_org=use["sender_org"],
            recipient_org=use["recipient_org"],
            outcome=outcome,
            guardian_notice=guardian_notice,
            reviewed_by_role=caller.role,
            reviewed_by_user=getattr(caller, "user_id", None) or None,
            reviewed_at=self._clock.now(),
            audit_event_id=str(uuid.uuid4()),
        )
        # AUDIT CALL SITE (break-glass review): the audit chain hears of it before the read model, so
        # a review shown as done is always in the trail (a crash in between leaves it pending: it is
        # reviewed again, and the trail holds both).
        await self._audit.record(break_glass_review_event(review))
        if not await asyncio.to_thread(self._store.record, review):
            # Another supervisor's review landed between the check and this one; the trail holds both.
            winner = await asyncio.to_thread(self._store.review_of, delivery_id)
            raise _already(delivery_id, winner or {})
        return review


def _require_supervisor(caller: Caller) -> None:
    if caller.role not in REVIEW_ROLES:
        raise Forbidden(
            f"role '{caller.role}' may not review break-glass disclosures (supervisors do)",
            code="role-forbidden",
        )


def _already(delivery_id: str, earlier: dict[str, Any]) -> Conflict:
    at = earlier.get("reviewed_at")
    when = f" at {at.isoformat()}" if isinstance(at, datetime) else ""
    return Conflict(
        f"the emergency disclosure '{delivery_id}' was already reviewed{when} "
        f"(outcome {earlier.get('outcome', 'unknown')})",
        code="already-reviewed",
    )
