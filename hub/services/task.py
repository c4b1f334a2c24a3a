"""Use case: a recipient (or the requester) moves a referral Task through its lifecycle."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from hub.domain.error import Forbidden, NotFound
from hub.domain.lifecycle import Party, Transition, check_business_update, check_transition, parse_status
from hub.services.port import Caller, Clock, EventPublisher, ReadModel
from schemas.envelope import TaskStatusChanged
from schemas.topic import TASKS_STATUS_CHANGED


@dataclass(frozen=True)
class ChangeStatus:
    task_id: str
    status: str
    reason: str | None = None
    business_status: str | None = None
    feedback: str | None = None


class NoteSealer(Protocol):
    def seal_note(self, org: str, referral_id: str, note_id: str, text: bytes) -> str:
        """Seal free text for one organisation (the referrer); returns a base64url token."""


class TransitionTask:
    def __init__(
        self,
        read_model: ReadModel,
        publisher: EventPublisher,
        clock: Clock,
        topic_name: Any,
        notes: NoteSealer | None = None,
    ) -> None:
        self._rm = read_model
        self._publisher = publisher
        self._clock = clock
        self._topic = topic_name(TASKS_STATUS_CHANGED.name)
        self._notes = notes

    async def __call__(self, caller: Caller, cmd: ChangeStatus) -> TaskStatusChanged:
        row = self._rm.delivery_by_task(cmd.task_id)
        # An agency that is neither side of the transfer gets the same answer as for a missing task,
        # so task ids of other agencies cannot be probed.
        if row is None or caller.org_id not in (row.recipient_org, row.sender_org):
            raise NotFound(f"no task '{cmd.task_id}' visible to '{caller.org_id}'", code="task-not-found")
        party = Party.RECIPIENT if caller.org_id == row.recipient_org else Party.REQUESTER
        target = parse_status(cmd.status)
        current = parse_status(row.status)
        if target == current and cmd.business_status:
            check_business_update(current, party, cmd.business_status)
        else:
            check_transition(
                Transition(
                    current,
                    target,
                    party,
                    cmd.reason,
                    feedback_returned=bool(cmd.feedback and cmd.feedback.strip()),
                )
            )
        if caller.role not in ("system", "clinician", "case-worker", "supervisor", "referrer"):
            raise Forbidden(f"role '{caller.role}' cannot change task status", code="role-forbidden")
        event_id = str(uuid.uuid4())
        sealed_feedback = ""
        if cmd.feedback and cmd.feedback.strip() and self._notes is not None:
            sealed_feedback = self._notes.seal_note(
                row.sender_org, row.referral_id, event_id, cmd.feedback.strip().encode()
            )
        event = TaskStatusChanged(
            event_id=event_id,
            sealed_feedback=sealed_feedback,
            task_id=row.task_id,
            referral_id=row.referral_id,
            delivery_id=row.delivery_id,
            from_status=current.value,
            to_status=target.value,
            business_status=cmd.business_status,
            reason=cmd.reason,
            actor_org=caller.org_id,
            actor_role=caller.role,
            at=self._clock.now(),
        )
        await self._publisher.publish(self._topic, row.referral_id, event)
        # Read-your-writes for the caller: project now; the worker's projection of the same event is a
        # no-op (idempotent by event id).
        self._rm.record_status(event)
        return event
