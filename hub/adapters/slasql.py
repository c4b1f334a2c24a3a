"""SQL side of SLA monitoring and follow-ups: open deadlines, escalations, follow-up projections."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.adapters.db import aware, deliveries, escalations, follow_ups, insert_once, referrals, timeline
from hub.domain.directory import Directory
from hub.domain.sla import Deadline
from hub.services.sla import FollowUpRow, OpenDeadline
from schemas.envelope import FollowUpChanged, SlaEscalated

# Subjects whose raised levels are read in one statement.
_CHUNK = 500

# Deadline kind -> (due column, statuses in which that clock runs)
_CLOCKS = {
    "ack": ("ack_due", ("requested",)),
    "decide": ("decide_due", ("received",)),
    "first-contact": ("first_contact_due", ("requested", "received", "accepted")),
}


def _reached(
    conn: sa.Connection, started: Any, due: Any, fraction: float, now: datetime
) -> sa.ColumnElement[bool]:
    """SQL for "started + fraction × (due − started) <= now": the clock's reminder time has come."""
    at = sa.bindparam(None, now, type_=sa.DateTime(timezone=True))
    if conn.dialect.name == "sqlite":  # timestamps are text there: compare as Julian days
        day = sa.func.julianday
        return day(started) + (day(due) - day(started)) * fraction <= day(at)

    def seconds(ts: Any) -> Any:  # EXTRACT(EPOCH FROM ts): a number, no interval arithmetic
        return sa.extract("epoch", ts)

    return seconds(started) + (seconds(due) - seconds(started)) * fraction <= seconds(at)


def _raised(conn: sa.Connection, subject_ids: list[str]) -> dict[tuple[str, str], list[int]]:
    """The levels already raised for these subjects, by (subject, kind)."""
    raised: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i in range(0, len(subject_ids), _CHUNK):
        query = sa.select(escalations.c.subject_id, escalations.c.kind, escalations.c.level).where(
            escalations.c.subject_id.in_(subject_ids[i : i + _CHUNK])
        )
        for row in conn.execute(query):
            raised[(row.subject_id, row.kind)].append(row.level)
    return raised


class SqlSla:
    def __init__(self, engine: sa.Engine, directory: Directory | None = None) -> None:
        self._engine = engine
        self._directory = directory

    def open_deadlines(self, now: datetime, reminder_fraction: float) -> list[OpenDeadline]:
        """The running clocks whose reminder time (``reminder_fraction`` of the window) has come.

        The database picks them: a pass every few seconds must not read every open delivery and
        every escalation ever raised, only the few that may call for one now.
        """
        out: list[OpenDeadline] = []
        with self._engine.connect() as conn:
            for kind, (column, states) in _CLOCKS.items():
                due_col = deliveries.c[column]
                rows = conn.execute(
                    sa.select(
                        deliveries.c.delivery_id,
                        deliveries.c.referral_id,
                        deliveries.c.task_id,
                        deliveries.c.recipient_org,
                        deliveries.c.created_at,
                        deliveries.c.escalation,
                        due_col.label("due"),
                    )
                    .where(due_col.is_not(None))
                    .where(deliveries.c.status.in_(states))
                    .where(_reached(conn, deliveries.c.created_at, due_col, reminder_fraction, now))
                )
                for r in rows:
                    deadline = Deadline(
                        subject_id=r.delivery_id,
                        kind=kind,
                        started=aware(r.created_at),
                        due=aware(r.due),
                        chain=tuple(r.escalation or ()),
                    )
                    out.append(OpenDeadline(deadline, r.referral_id, r.task_id, r.recipient_org, ()))
            follow_up_rows = conn.execute(
                sa.select(follow_ups)
                .where(follow_ups.c.status == "due")
                .where(_reached(conn, follow_ups.c.scheduled_at, follow_ups.c.due_at, reminder_fraction, now))
            )
            for f in follow_up_rows:
                deadline = Deadline(
                    subject_id=f.followup_id,
                    kind="follow-up",
                    started=aware(f.scheduled_at),
                    due=aware(f.due_at),
                )
                out.append(OpenDeadline(deadline, f.referral_id, None, f.owner_org, ()))
            raised = _raised(conn, sorted({o.deadline.subject_id for o in out}))
        return [
            replace(o, raised_levels=tuple(raised.get((o.deadline.subject_id, o.deadline.kind), ())))
            for o in out
        ]

    # -- projections -----------------------------------------------------------------------------
    def record_escalation(self, event: SlaEscalated) -> bool:
        with self._engine.begin() as conn:
            inserted = insert_once(
                conn,
                escalations,
                dict(
                    event_id=event.event_id,
                    subject_id=event.subject_id,
                    referral_id=event.referral_id,
                    task_id=event.task_id,
                    owner_org=event.owner_org,
                    kind=event.kind,
                    level=event.level,
                    notify=event.notify,
                    due_at=event.due_at,
                    at=event.at,
                ),
            )
            if not inserted:
                return False
            table = follow_ups if event.kind == "follow-up" else deliveries
            key = table.c.followup_id if event.kind == "follow-up" else table.c.delivery_id
            conn.execute(
                table.update()
                .where(key == event.subject_id)
                .where(table.c.escalation_level < event.level)
                .values(escalation_level=event.level)
            )
            insert_once(
                conn,
                timeline,
                dict(
                    event_id=event.event_id,
                    referral_id=event.referral_id,
                    task_id=event.task_id,
                    kind="reminder" if event.level == 0 else "escalated",
                    actor_org="hub",
                    actor_role="system",
                    reason=f"{event.kind} due {event.due_at:%Y-%m-%dT%H:%M:%SZ}: level {event.level} "
                    f"-> {event.notify}",
                    at=event.at,
                ),
            )
            return True

    def record_follow_up(self, event: FollowUpChanged) -> bool:
        with self._engine.begin() as conn:
            if event.change == "scheduled":
                assert event.due_at is not None
                done = insert_once(
                    conn,
                    follow_ups,
                    dict(
                        followup_id=event.followup_id,
                        referral_id=event.referral_id,
                        owner_org=event.owner_org,
                        sequence=event.sequence,
                        scheduled_at=event.at,
                        due_at=event.due_at,
                        status="due",
                        escalation_level=0,
                    ),
                )
                kind, reason = "follow-up-scheduled", f"visit {event.sequence} due {event.due_at.date()}"
            else:
                done = (
                    conn.execute(
                        follow_ups.update()
                        .where(follow_ups.c.followup_id == event.followup_id)
                        .where(follow_ups.c.status == "due")
                        .values(status="done", outcome=event.outcome, done_at=event.at)
                    ).rowcount
                    > 0
                )
                kind, reason = "follow-up-done", f"{event.followup_id}: {event.outcome}"
            if done:
                insert_once(
                    conn,
                    timeline,
                    dict(
                        event_id=event.event_id,
                        referral_id=event.referral_id,
                        task_id=None,
                        kind=kind,
                        actor_org=event.actor_org,
                        actor_role="system",
                        reason=reason,
                        at=event.at,
                    ),
                )
            return bool(done)

    # -- queries -----------------------------------------------------------------------------------
    def follow_up(self, followup_id: str) -> FollowUpRow | None:
        with self._engine.connect() as conn:
            r = conn.execute(sa.select(follow_ups).where(follow_ups.c.followup_id == followup_id)).first()
        return FollowUpRow(r.followup_id, r.referral_id, r.owner_org, r.status) if r else None

    def follow_ups_of(self, org_id: str, status: str | None) -> list[dict[str, Any]]:
        q = sa.select(follow_ups).where(follow_ups.c.owner_org == org_id)
        if status:
            q = q.where(follow_ups.c.status == status)
        with self._engine.connect() as conn:
            rows = conn.execute(q.order_by(follow_ups.c.due_at)).mappings()
            return [{k: aware(v) for k, v in dict(r).items()} for r in rows]

    def escalations_of(self, org_id: str) -> list[dict[str, Any]]:
        """Escalations an agency must act on or was told about (its own deadlines, or named in the chain)."""
        q = sa.select(escalations).where(
            sa.or_(escalations.c.owner_org == org_id, escalations.c.notify == org_id)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(q.order_by(escalations.c.at.desc()).limit(500)).mappings()
            return [{k: aware(v) for k, v in dict(r).items()} for r in rows]

    def owner_for(self, referral_id: str) -> str | None:
        with self._engine.connect() as conn:
            r = conn.execute(
                sa.select(referrals.c.sender_org, referrals.c.sender_type, referrals.c.town).where(
                    referrals.c.referral_id == referral_id
                )
            ).first()
        if r is None:
            return None
        if r.sender_type == "school":
            return str(r.sender_org)
        if self._directory is not None:
            for org in self._directory.of_type("street-centre"):
                if r.town and org.serves(r.town):
                    return org.id
        return "district-centre"
