"""The Task lifecycle: who may move which transition, and what each refusal says."""

from __future__ import annotations

import pytest

from hub.domain.error import Conflict, Forbidden, InvalidInput
from hub.domain.lifecycle import (
    Party,
    TaskStatus,
    Transition,
    allowed_targets,
    check_transition,
    parse_status,
)

S, P = TaskStatus, Party

LEGAL = [
    (S.REQUESTED, S.RECEIVED, P.RECIPIENT, None, False),
    (S.RECEIVED, S.ACCEPTED, P.RECIPIENT, None, False),
    (S.RECEIVED, S.REJECTED, P.RECIPIENT, "no capacity this month", False),
    (S.ACCEPTED, S.IN_PROGRESS, P.RECIPIENT, None, False),
    (S.IN_PROGRESS, S.ON_HOLD, P.RECIPIENT, None, False),
    (S.ON_HOLD, S.IN_PROGRESS, P.RECIPIENT, None, False),
    (S.IN_PROGRESS, S.COMPLETED, P.RECIPIENT, None, True),
    (S.IN_PROGRESS, S.FAILED, P.RECIPIENT, "family moved away", False),
    (S.REQUESTED, S.CANCELLED, P.REQUESTER, None, False),
    (S.ACCEPTED, S.CANCELLED, P.RECIPIENT, "duplicate of another referral", False),
    (S.RECEIVED, S.ENTERED_IN_ERROR, P.REQUESTER, "wrong student", False),
]


@pytest.mark.parametrize(("current", "target", "party", "reason", "feedback"), LEGAL)
def test_legal_transitions_pass(current: S, target: S, party: P, reason: str | None, feedback: bool) -> None:
    check_transition(Transition(current, target, party, reason, feedback))


@pytest.mark.parametrize(
    ("transition", "error", "code"),
    [
        (Transition(S.REQUESTED, S.COMPLETED, P.RECIPIENT), Conflict, "invalid-transition"),
        (Transition(S.COMPLETED, S.IN_PROGRESS, P.RECIPIENT), Conflict, "invalid-transition"),
        (Transition(S.REQUESTED, S.RECEIVED, P.REQUESTER), Forbidden, "transition-not-permitted"),
        (Transition(S.RECEIVED, S.ENTERED_IN_ERROR, P.RECIPIENT, "x"), Forbidden, "transition-not-permitted"),
        (Transition(S.RECEIVED, S.REJECTED, P.RECIPIENT), InvalidInput, "reason-required"),
        (Transition(S.RECEIVED, S.REJECTED, P.RECIPIENT, "   "), InvalidInput, "reason-required"),
        (Transition(S.ACCEPTED, S.CANCELLED, P.RECIPIENT), InvalidInput, "reason-required"),
        (Transition(S.IN_PROGRESS, S.COMPLETED, P.RECIPIENT), Conflict, "feedback-required"),
    ],
)
def test_illegal_transitions_are_refused_with_a_stable_code(
    transition: Transition, error: type, code: str
) -> None:
    with pytest.raises(error) as caught:
        check_transition(transition)
    assert caught.value.code == code


def test_every_open_state_can_be_cancelled_and_no_terminal_state_moves() -> None:
    for state in S:
        targets = allowed_targets(state, P.REQUESTER) + allowed_targets(state, P.RECIPIENT)
        if state in (S.REJECTED, S.COMPLETED, S.FAILED, S.CANCELLED, S.ENTERED_IN_ERROR):
            assert targets == []
        else:
            assert S.CANCELLED in targets


def test_unknown_status_names_the_allowed_codes() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_status("recieved")
    assert "received" in caught.value.details[0]["message"]


def test_progress_detail_without_a_status_change_is_for_the_recipient_of_an_acknowledged_task() -> None:
    from hub.domain.lifecycle import check_business_update

    check_business_update(S.ACCEPTED, P.RECIPIENT, "appointment-booked")
    with pytest.raises(Conflict):
        check_business_update(S.REQUESTED, P.RECIPIENT, "appointment-booked")
    with pytest.raises(Forbidden):
        check_business_update(S.ACCEPTED, P.REQUESTER, "appointment-booked")
    with pytest.raises(InvalidInput):
        check_business_update(S.ACCEPTED, P.RECIPIENT, "booked")
