"""Use cases: watch SLA deadlines and raise reminders/escalations; schedule and record follow-ups."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from hub.domain.error import Conflict, InvalidInput, NotFound
from hub.domain.sla import Deadline, SlaPolicy, due_escalations
from hub.services.port import Caller, Clock, EventPublisher
from schemas.envelope import FollowUpChanged, SlaEscalated, TaskStatusChanged
from schemas.topic import FOLLOWUPS_CHANGED, SLA_ESCALATIONS

FOLLOW_UP_OUTCOMES = ("visited", "no-concerns", "concerns-referred-again", "unreachable", "declined")


@dataclass(frozen=True)
class OpenDeadline:
    deadline: Deadline
    referral_id: str
    task_id: str | None
    owner_org: str
    raised_levels: tuple[int, ...]


class SlaSource(Protocol):
    def open_deadlines(self, now: datetime, reminder_fraction: float) -> Sequence[OpenDeadline]:
        """The running clocks whose reminder time (that share of the window) has come by ``now``."""


class MonitorSla:
    """One pass over the open deadlines whose reminder time has come; safe to run in every worker
    (event ids are deterministic)."""

    def __init__(
        self,
        source: SlaSource,
        publisher: EventPublisher,
        clock: Clock,
        topic_name: Callable[[str], str],
        policy: SlaPolicy,
    ) -> None:
        self._source = source
        self._publisher = publisher
        self._clock = clock
        self._topic = topic_name(SLA_ESCALATIONS.name)
        self._policy = policy

    def due(self) -> list[SlaEscalated]:
        now = self._clock.now()
        events: list[SlaEscalated] = []
        for item in self._source.open_deadlines(now, self._policy.reminder_fraction):
            for esc in due_escalations(item.deadline, now, item.raised_levels, self._policy):
                notify = item.owner_org if esc.notify == "owner" else esc.notify
                events.append(
                    SlaEscalated(
                        event_id=esc.event_id,
                        subject_id=esc.subject_id,
                        referral_id=item.referral_id,
                        task_id=item.task_id,
                        owner_org=item.owner_org,
                        kind=esc.kind,
                        level=esc.level,
                        notify=notify,
                        due_at=esc.due,
                        at=now,
                    )
                )
        return events

    async def publish(self, events: Sequence[SlaEscalated]) -> None:
        for event in events:
            await self._publisher.publish(self._topic, event.referral_id, event)


class FollowUpOwner(Protocol):
    def owner_for(self, referral_id: str) -> str | None:
        """The school that referred, else the street centre of the student's town."""


def followup_id_for(referral_id: str, sequence: int) -> str:
    return "fu-" + hashlib.sha256(f"{referral_id}|{sequence}".encode()).hexdigest()[:20]


class ScheduleFollowUps:
    """After completion, follow-up visits at the configured offsets (default 2 weeks, 1 and 3 months)."""

    def __init__(self, owners: FollowUpOwner, offsets: Sequence[timedelta]) -> None:
        self._owners = owners
        self._offsets = tuple(offsets)

    def __call__(self, completed: TaskStatusChanged) -> list[FollowUpChanged]:
        owner = self._owners.owner_for(completed.referral_id)
        if owner is None:
            return []
        return [
            FollowUpChanged(
                event_id=f"{followup_id_for(completed.referral_id, n)}:scheduled",
                followup_id=followup_id_for(completed.referral_id, n),
                referral_id=completed.referral_id,
                owner_org=owner,
                change="scheduled",
                sequence=n,
                due_at=completed.at + offset,
                at=completed.at,
            )
            for n, offset in enumerate(self._offsets, start=1)
        ]


@dataclass(frozen=True)
class FollowUpRow:
    followup_id: str
    referral_id: str
    owner_org: str
    status: str


class FollowUpStore(Protocol):
    def follow_up(self, followup_id: str) -> FollowUpRow | None: ...


class RecordFollowUp:
    def __init__(
        self, store: FollowUpStore, publisher: EventPublisher, clock: Clock, topic_name: Callable[[str], str]
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self._topic = topic_name(FOLLOWUPS_CHANGED.name)

    async def __call__(self, caller: Caller, followup_id: str, outcome: str) -> FollowUpChanged:
        row = self._store.follow_up(followup_id)
        if row is None or row.owner_org != caller.org_id:
            raise NotFound(f"no follow-up '{followup_id}' for '{caller.org_id}'", code="followup-not-found")
        if outcome not in FOLLOW_UP_OUTCOMES:
            raise InvalidInput(
                f"unknown follow-up outcome '{outcome}'",
                details=[
                    {"path": "$.outcome", "rule": "code-unknown", "message": ", ".join(FOLLOW_UP_OUTCOMES)}
                ],
            )
        if row.status == "done":
            raise Conflict(f"follow-up '{followup_id}' is already recorded", code="followup-done")
        event = FollowUpChanged(
            event_id=f"{followup_id}:done",
            followup_id=followup_id,
            referral_id=row.referral_id,
            owner_org=row.owner_org,
            change="done",
            outcome=outcome,
            actor_org=caller.org_id,
            at=self._clock.now(),
        )
        await self._publisher.publish(self._topic, row.referral_id, event)
        return event
