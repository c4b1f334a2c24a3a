"""Read-side use cases: inbox and referral timeline, filtered to what the caller may see."""

from __future__ import annotations

from typing import Any

from hub.domain.error import NotFound
from hub.services.port import Caller, ReadModel


class Queries:
    def __init__(self, read_model: ReadModel, open_note: Any = None) -> None:
        self._rm = read_model
        # (org, referral_id, note_id, token) -> bytes; the referrer's key opens feedback sealed for it.
        self._open_note = open_note

    def _with_feedback(
        self, caller: Caller, referral_id: str, event: dict[str, Any], is_sender: bool
    ) -> dict[str, Any]:
        token = event.pop("sealed_note", None)
        if token and is_sender and self._open_note is not None:
            event["feedback"] = self._open_note(caller.org_id, referral_id, event["event_id"], token).decode()
        return event

    def inbox(
        self, caller: Caller, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        return self._rm.inbox(caller.org_id, status, limit, offset)

    def referral(self, caller: Caller, referral_id: str) -> dict[str, Any]:
        ref = self._rm.referral(referral_id)
        deliveries = self._rm.deliveries_of(referral_id) if ref else []
        is_sender = ref is not None and ref["sender_org"] == caller.org_id
        mine = [d for d in deliveries if d["recipient_org"] == caller.org_id]
        if ref is None or not (is_sender or mine):
            raise NotFound(
                f"no referral '{referral_id}' visible to '{caller.org_id}'", code="referral-not-found"
            )
        visible = deliveries if is_sender else mine
        visible_tasks = {d["task_id"] for d in visible}
        events = [
            e
            for e in self._rm.timeline(referral_id)
            if is_sender or e["task_id"] in visible_tasks or e["task_id"] is None
        ]
        events = [self._with_feedback(caller, referral_id, dict(e), is_sender) for e in events]
        return {
            "referral_id": referral_id,
            "sender_org": ref["sender_org"],
            "submitted_at": ref["submitted_at"],
            "risk_level": ref["risk_level"],
            "priority": ref["priority"],
            "reasons": ref["reasons"],
            "ruleset_version": ref["ruleset_version"],
            "deliveries": [
                {
                    k: d[k]
                    for k in (
                        "delivery_id",
                        "task_id",
                        "recipient_org",
                        "status",
                        "business_status",
                        "purpose",
                        "legal_basis",
                        "created_at",
                        "ack_due",
                    )
                }
                for d in visible
            ],
            "timeline": events,
        }
