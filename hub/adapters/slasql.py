"""SQL side of SLA monitoring and follow-ups: open deadlines, escalations, follow-up projections."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.adapters.db import aware, deliveries, escalations, follow_ups, insert_once, referrals, timeline
from hub.domain.directory import Directory
from hub.domain.sla import Deadline
from hub.services.sla import FollowUpRow, OpenDeadline
from schemas.envelope import FollowUpChanged, SlaEscalated

# Deadline kind -> (due column, statuses in which that clock runs)
_CLOCKS = {
    "ack": ("ack_due", ("requested",)),
    "decide": ("decide_due", ("received",)),
    "first-contact": ("first_contact_due", ("requested", "received", "accepted")),
}


class SqlSla:
    def __init__(self, engine: sa.Engine, directory: Directory | None = None) -> None:
        self._engine = engine
        self._directory = directory

    def _raised(self, conn: sa.Connection) -> dict[tuple[str, str], list[int]]:
        raised: dict[tuple[str, str], list[int]] = defaultdict(list)
        for row in conn.execute(sa.select(escalations.c.subject_id, escalations.c.kind, escalations.c.level)):
            raised[(row.subject_id, row.kind)].append(row.level)
        return raised

    def open_deadlines(self, now: datetime) -> list[OpenDeadline]:
        out: list[OpenDeadline] = []
        with self._engine.connect() as conn:
            raised = self._raised(conn)
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
                )
                for r in rows:
                    deadline = Deadline(
                        subject_id=r.delivery_id,
                        kind=kind,
                        started=aware(r.created_at),
                        due=aware(r.due),
                        chain=tuple(r.escalation or ()),
                    )
                    out.append(
                        OpenDeadline(
                            deadline,
                            r.referral_id,
                            r.task_id,
                            r.recipient_org,
                            tuple(raised.get((r.delivery_id, kind), ())),
                        )
                    )
            for f in conn.execute(sa.select(follow_ups).where(follow_ups.c.status == "due")):
                deadline = Deadline(
                    subject_id=f.followup_id,
                    kind="follow-up",
                    started=aware(f.scheduled_at),
                    due=aware(f.due_at),
                )
                out.append(
                    OpenDeadline(
                        deadline,
                        f.referral_id,
                        None,
                        f.owner_org,
                        tuple(raised.get((f.followup_id, "follow-up"), ())),
                    )
                )
        return out

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
