"""The SLA monitor's view of the read model, on PostgreSQL and on the embedded SQLite default.

A pass runs every few seconds in a worker. It must see each running clock whose reminder time has
come, with the levels already raised (or it would remind again), and leave the rest in the
database: a district's open deliveries and the escalations raised over the years would otherwise
be read and sifted in Python on every pass.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.readmodel import delivery_row

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _delivery(delivery_id: str, status: str, ack_window: timedelta) -> dict[str, Any]:
    return delivery_row(delivery_id, AT, status=status, ack_due=AT + ack_window)


def _escalation(delivery_id: str, level: int) -> dict[str, Any]:
    return {
        "event_id": f"{delivery_id}:ack:{level}",
        "subject_id": delivery_id,
        "referral_id": "r-" + delivery_id,
        "task_id": "t-" + delivery_id,
        "owner_org": "sj-camhs-1",
        "kind": "ack",
        "level": level,
        "notify": "sj-camhs-1",
        "due_at": AT + timedelta(hours=1),
        "at": AT + timedelta(hours=1),
    }


class _Clock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


class _Published:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, topic: str, key: str, event: Any) -> None:
        self.events.append(event)


def test_a_pass_raises_only_what_is_due_and_never_a_level_twice(engine: sa.Engine) -> None:
    from hub.adapters.db import deliveries, escalations
    from hub.adapters.slasql import SqlSla
    from hub.domain.sla import SlaPolicy
    from hub.services.sla import MonitorSla

    overdue, fresh, acknowledged = "d-overdue", "d-fresh", "d-acked"
    with engine.begin() as conn:
        conn.execute(
            deliveries.insert(),
            [
                _delivery(overdue, "requested", timedelta(hours=1)),
                # Its reminder falls due at 75 % of a three-day window: not yet.
                _delivery(fresh, "requested", timedelta(days=3)),
                _delivery(acknowledged, "received", timedelta(hours=1)),
            ],
        )
        conn.execute(
            escalations.insert(),
            [_escalation(overdue, 0), _escalation(overdue, 1), _escalation(acknowledged, 0)],
        )

    now = AT + timedelta(hours=2, minutes=30)  # level 2 of a one-hour window falls due at +2 h
    monitor = MonitorSla(SqlSla(engine), _Published(), _Clock(now), lambda name: name, SlaPolicy())
    due = monitor.due()

    # The overdue delivery had its reminder and level 1: only level 2 is new.
    assert [(e.subject_id, e.kind, e.level) for e in due] == [(overdue, "ack", 2)]
    # At the fresh one's reminder time (75 % of three days), its reminder comes.
    later = MonitorSla(
        SqlSla(engine), _Published(), _Clock(AT + timedelta(days=2, hours=6)), lambda n: n, SlaPolicy()
    )
    assert (fresh, "ack", 0) in [(e.subject_id, e.kind, e.level) for e in later.due()]


def test_a_pass_reads_only_the_clocks_that_may_call_for_something(engine: sa.Engine) -> None:
    from hub.adapters.db import deliveries
    from hub.adapters.slasql import SqlSla

    n = 2000
    rows = [_delivery(f"d-{i}", "requested", timedelta(days=3)) for i in range(n)]
    rows[7] = _delivery("d-7", "requested", timedelta(hours=1))
    with engine.begin() as conn:
        conn.execute(deliveries.insert(), rows)

    start = time.process_time()
    found = SqlSla(engine).open_deadlines(AT + timedelta(hours=1), reminder_fraction=0.75)
    print(f"a pass over {n} open deliveries: {1000 * (time.process_time() - start):.1f} ms CPU")

    assert [(o.deadline.subject_id, o.deadline.kind) for o in found] == [("d-7", "ack")]
