"""The referral Task lifecycle (FHIR Task.status) and who may move each transition."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hub.domain.error import Conflict, Forbidden, InvalidInput


class TaskStatus(StrEnum):
    REQUESTED = "requested"
    RECEIVED = "received"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    IN_PROGRESS = "in-progress"
    ON_HOLD = "on-hold"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ENTERED_IN_ERROR = "entered-in-error"


class Party(StrEnum):
    """Which side of a transfer the actor is on."""

    REQUESTER = "requester"
    RECIPIENT = "recipient"
    HUB = "hub"


S = TaskStatus
OPEN_STATES = frozenset({S.REQUESTED, S.RECEIVED, S.ACCEPTED, S.IN_PROGRESS, S.ON_HOLD})
TERMINAL_STATES = frozenset({S.REJECTED, S.COMPLETED, S.FAILED, S.CANCELLED, S.ENTERED_IN_ERROR})

# (from, to) -> parties allowed to make it
_TRANSITIONS: dict[tuple[TaskStatus, TaskStatus], frozenset[Party]] = {
    (S.REQUESTED, S.RECEIVED): frozenset({Party.RECIPIENT}),
    (S.RECEIVED, S.ACCEPTED): frozenset({Party.RECIPIENT}),
    (S.RECEIVED, S.REJECTED): frozenset({Party.RECIPIENT}),
    (S.ACCEPTED, S.IN_PROGRESS): frozenset({Party.RECIPIENT}),
    (S.IN_PROGRESS, S.ON_HOLD): frozenset({Party.RECIPIENT}),
    (S.ON_HOLD, S.IN_PROGRESS): frozenset({Party.RECIPIENT}),
    (S.IN_PROGRESS, S.COMPLETED): frozenset({Party.RECIPIENT}),
    (S.IN_PROGRESS, S.FAILED): frozenset({Party.RECIPIENT}),
    (S.ON_HOLD, S.FAILED): frozenset({Party.RECIPIENT}),
}
for _open in OPEN_STATES:
    _TRANSITIONS[(_open, S.CANCELLED)] = frozenset({Party.REQUESTER, Party.RECIPIENT})
    _TRANSITIONS[(_open, S.ENTERED_IN_ERROR)] = frozenset({Party.REQUESTER})

# Transitions that need a reason from the actor.
_REASON_REQUIRED = {S.REJECTED, S.FAILED, S.ENTERED_IN_ERROR}


@dataclass(frozen=True)
class Transition:
    current: TaskStatus
    target: TaskStatus
    party: Party
    reason: str | None = None
    feedback_returned: bool = False


def parse_status(value: str) -> TaskStatus:
    try:
        return TaskStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in TaskStatus)
        raise InvalidInput(
            f"unknown task status '{value}'",
            details=[{"path": "$.status", "rule": "code-unknown", "message": f"one of: {allowed}"}],
        ) from None


def check_transition(t: Transition) -> None:
    """Raise unless ``t`` is a legal move for this party; return quietly when it is."""
    allowed = _TRANSITIONS.get((t.current, t.target))
    if allowed is None:
        raise Conflict(
            f"a task in status '{t.current}' cannot move to '{t.target}'",
            code="invalid-transition",
            details=[
                {
                    "from": t.current.value,
                    "to": t.target.value,
                    "allowed": sorted(b.value for (a, b) in _TRANSITIONS if a == t.current),
                }
            ],
        )
    if t.party not in allowed:
        raise Forbidden(
            f"the {t.party.value} may not move a task from '{t.current}' to '{t.target}'",
            code="transition-not-permitted",
        )
    needs_reason = t.target in _REASON_REQUIRED or (t.target == S.CANCELLED and t.party == Party.RECIPIENT)
    if needs_reason and not (t.reason and t.reason.strip()):
        raise InvalidInput(
            f"moving to '{t.target}' requires a reason",
            details=[{"path": "$.reason", "rule": "required", "message": "a reason is required"}],
            code="reason-required",
        )
    if t.target == S.COMPLETED and not t.feedback_returned:
        raise Conflict(
            "a referral completes only with feedback returned to the referrer",
            code="feedback-required",
        )


def allowed_targets(current: TaskStatus, party: Party) -> list[TaskStatus]:
    return [b for (a, b), parties in _TRANSITIONS.items() if a == current and party in parties]


BUSINESS_STATUSES = ("delivered", "appointment-booked", "no-show", "feedback-sent", "follow-up-due")


def check_business_update(current: TaskStatus, party: Party, business_status: str | None) -> None:
    """A detail on an open task without a status change (e.g. appointment booked after acceptance)."""
    if business_status not in BUSINESS_STATUSES:
        raise InvalidInput(
            f"unknown business status '{business_status}'",
            details=[
                {"path": "$.business_status", "rule": "code-unknown", "message": ", ".join(BUSINESS_STATUSES)}
            ],
        )
    if party != Party.RECIPIENT:
        raise Forbidden("only the recipient records the progress of a task", code="transition-not-permitted")
    if current not in OPEN_STATES or current == TaskStatus.REQUESTED:
        raise Conflict(
            f"a task in status '{current}' takes no progress updates (acknowledge it first)",
            code="invalid-transition",
        )
