"""SLA policy: which reminders and escalations a deadline calls for at a given moment (pure).

Everything is derived from persisted facts (when the clock started, when it is due, what was already
raised), so a restarted or second worker computes the same answer and nothing depends on timers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# Who hears about a breach, level by level, when the route names no escalation chain.
DEFAULT_CHAIN = ("role:supervisor", "district-centre", "district-office")


@dataclass(frozen=True)
class SlaPolicy:
    reminder_fraction: float = 0.75  # remind once this share of the window has passed
    min_step: timedelta = timedelta(seconds=1)
    max_step: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class Deadline:
    subject_id: str  # delivery id or follow-up id
    kind: str  # ack | decide | first-contact | follow-up
    started: datetime
    due: datetime
    chain: tuple[str, ...] = ()


@dataclass(frozen=True)
class Escalation:
    event_id: str
    subject_id: str
    kind: str
    level: int
    notify: str
    due: datetime


def step_of(deadline: Deadline, policy: SlaPolicy) -> timedelta:
    """Time between escalation levels: the deadline's own window, within bounds.

    A 30-minute crisis acknowledgement escalates every 30 minutes; a 3-working-day one once a day.
    """
    window = deadline.due - deadline.started
    return min(max(window, policy.min_step), policy.max_step)


def due_escalations(
    deadline: Deadline, now: datetime, raised_levels: Sequence[int], policy: SlaPolicy
) -> list[Escalation]:
    """The escalations that should exist by ``now`` and were not raised yet, lowest level first."""
    chain = tuple(deadline.chain) or DEFAULT_CHAIN
    window = deadline.due - deadline.started
    out: list[Escalation] = []
    raised = set(raised_levels)

    def add(level: int, notify: str) -> None:
        if level not in raised:
            out.append(
                Escalation(
                    event_id=f"{deadline.subject_id}:{deadline.kind}:{level}",
                    subject_id=deadline.subject_id,
                    kind=deadline.kind,
                    level=level,
                    notify=notify,
                    due=deadline.due,
                )
            )

    if now >= deadline.started + window * policy.reminder_fraction:
        add(0, "owner")
    if now >= deadline.due:
        step = step_of(deadline, policy)
        for level, notify in enumerate(chain, start=1):
            if now >= deadline.due + step * (level - 1):
                add(level, notify)
    return out
