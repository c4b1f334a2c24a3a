"""SQL implementation of the ReadModel port; every write is idempotent under redelivery."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.adapters.db import aware_row, deliveries, insert_many, insert_once, referrals, timeline, writing
from hub.services.port import DeliveryRow, Refusal
from schemas.envelope import DeliveryCreated, DeliveryOpened, ReferralSubmitted, TaskStatusChanged

# On PostgreSQL a routing batch that adds deliveries notifies this channel when it commits, with an
# empty payload (no ids, nothing about anyone): a listener — the benchmark's visibility probe, a live
# inbox — re-reads the read model then instead of polling it.
DELIVERED_CHANNEL = "qixin_delivered"

_STATUS_TIMESTAMP = {
    "received": "acknowledged_at",
    "accepted": "decided_at",
    "rejected": "decided_at",
    "in-progress": "first_contact_at",
    "completed": "closed_at",
    "failed": "closed_at",
    "cancelled": "closed_at",
    "entered-in-error": "closed_at",
}


class SqlReadModel:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def record_routed(
        self,
        routed: Sequence[tuple[ReferralSubmitted, datetime, str]],
        refusals: Sequence[Refusal],
        created: Sequence[DeliveryCreated],
    ) -> int:
        """A batch of routing decisions in one transaction (the routing batch's unit of work when
        one is open): four multi-row statements and a NOTIFY at most."""
        with writing(self._engine) as conn:
            if routed:
                insert_many(conn, referrals, [_referral_row(e, at, v) for e, at, v in routed])
            if refusals:
                insert_many(conn, timeline, [_refusal_row(r) for r in refusals])
            if not created:
                return 0
            new = insert_many(conn, deliveries, [_delivery_row(d) for d in created])
            # The "delivered" row only with the delivery it announces (a redelivery adds nothing).
            rows = [_delivered_row(d) for d in created if d.delivery_id in new]
            if rows:
                insert_many(conn, timeline, rows)
                if conn.dialect.name == "postgresql":  # delivered to listeners at COMMIT
                    conn.exec_driver_sql(f"NOTIFY {DELIVERED_CHANNEL}")
            return len(new)

    def record_status(self, event: TaskStatusChanged) -> bool:
        with self._engine.begin() as conn:
            if not insert_once(
                conn,
                timeline,
                {
                    "event_id": event.event_id,
                    "referral_id": event.referral_id,
                    "task_id": event.task_id,
                    "kind": "status",
                    "from_status": event.from_status,
                    "to_status": event.to_status,
                    "business_status": event.business_status,
                    "actor_org": event.actor_org,
                    "actor_role": event.actor_role,
                    "reason": event.reason,
                    "at": event.at,
                    "sealed_note": event.sealed_feedback or None,
                },
            ):
                return False
            values: dict[str, Any] = {
                "status": event.to_status,
                "updated_at": event.at,
                "version": deliveries.c.version + 1,
            }
            if event.business_status:
                values["business_status"] = event.business_status
            if column := _STATUS_TIMESTAMP.get(event.to_status):
                values[column] = event.at
            # Only move forward from the state the event was computed against.
            conn.execute(
                deliveries.update()
                .where(deliveries.c.task_id == event.task_id)
                .where(deliveries.c.status == event.from_status)
                .values(**values)
            )
            return True

    def delivery_by_task(self, task_id: str) -> DeliveryRow | None:
        with self._engine.connect() as conn:
            row = (
                conn.execute(sa.select(deliveries).where(deliveries.c.task_id == task_id)).mappings().first()
            )
        if row is None:
            return None
        return DeliveryRow(
            delivery_id=row["delivery_id"],
            task_id=row["task_id"],
            referral_id=row["referral_id"],
            recipient_org=row["recipient_org"],
            sender_org=row["sender_org"],
            status=row["status"],
            business_status=row["business_status"],
            version=row["version"],
        )

    def inbox(self, org_id: str, status: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        q = sa.select(
            deliveries.c.delivery_id,
            deliveries.c.task_id,
            deliveries.c.referral_id,
            deliveries.c.sender_org,
            deliveries.c.status,
            deliveries.c.business_status,
            deliveries.c.priority,
            deliveries.c.risk_level,
            deliveries.c.reasons,
            deliveries.c.purpose,
            deliveries.c.legal_basis,
            deliveries.c.categories,
            deliveries.c.created_at,
            deliveries.c.ack_due,
            deliveries.c.first_contact_due,
            deliveries.c.view_key_id,
            deliveries.c.sealed_view,
        ).where(deliveries.c.recipient_org == org_id)
        if status:
            q = q.where(deliveries.c.status == status)
        q = q.order_by(deliveries.c.risk_level.desc(), deliveries.c.created_at).limit(limit).offset(offset)
        with self._engine.connect() as conn:
            return [aware_row(r) for r in conn.execute(q).mappings()]

    def referral(self, referral_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = (
                conn.execute(sa.select(referrals).where(referrals.c.referral_id == referral_id))
                .mappings()
                .first()
            )
        return aware_row(row) if row else None

    def timeline(self, referral_id: str) -> list[dict[str, Any]]:
        q = (
            sa.select(timeline)
            .where(timeline.c.referral_id == referral_id)
            .order_by(timeline.c.at, timeline.c.seq)
        )
        with self._engine.connect() as conn:
            return [aware_row(r) for r in conn.execute(q).mappings()]

    def deliveries_of(self, referral_id: str) -> list[dict[str, Any]]:
        q = (
            sa.select(deliveries)
            .where(deliveries.c.referral_id == referral_id)
            .order_by(deliveries.c.created_at)
        )
        with self._engine.connect() as conn:
            return [aware_row(r) for r in conn.execute(q).mappings()]

    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- re-routing, access notices, refusals --------------------------------------------------------
    def intake_of(self, referral_id: str) -> ReferralSubmitted | None:
        with self._engine.connect() as conn:
            value = conn.execute(
                sa.select(referrals.c.intake).where(referrals.c.referral_id == referral_id)
            ).scalar()
        return ReferralSubmitted.model_validate(value) if value else None

    def declined_orgs(self, referral_id: str) -> list[str]:
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(deliveries.c.recipient_org)
                    .where(deliveries.c.referral_id == referral_id)
                    .where(deliveries.c.status == "rejected")
                ).scalars()
            )

    def record_opened(self, event: DeliveryOpened) -> bool:
        with self._engine.begin() as conn:
            return insert_once(
                conn,
                timeline,
                {
                    "event_id": event.event_id,
                    "referral_id": event.referral_id,
                    "task_id": event.task_id,
                    "kind": "opened",
                    "actor_org": event.recipient_org,
                    "actor_role": event.opened_by_role,
                    "reason": "first opening" if event.first else "opened again",
                    "at": event.at,
                },
            )


def _referral_row(event: ReferralSubmitted, routed_at: datetime, ruleset_version: str) -> dict[str, Any]:
    f = event.facts
    return {
        "referral_id": event.referral_id,
        "idempotency_key": event.idempotency_key,
        "sender_org": f.source_org,
        "sender_type": f.source_type.value,
        "student_pseudonym": event.student_pseudonym,
        "risk_level": int(f.risk_level),
        "priority": f.priority,
        "reasons": list(f.reasons),
        "town": f.town,
        "submitted_at": event.submitted_at,
        "routed_at": routed_at,
        "ruleset_version": ruleset_version,
        "intake": event.model_dump(mode="json"),
    }


def _delivery_row(event: DeliveryCreated) -> dict[str, Any]:
    return {
        "delivery_id": event.delivery_id,
        "task_id": event.task_id,
        "referral_id": event.referral_id,
        "recipient_org": event.recipient_org,
        "recipient_type": event.recipient_type.value,
        "sender_org": event.sender_org,
        "purpose": event.purpose,
        "legal_basis": event.legal_basis,
        "categories": list(event.categories),
        "priority": event.priority,
        "risk_level": int(event.risk_level),
        "reasons": list(event.reasons),
        "town": event.town,
        "rule_id": event.rule_id,
        "ruleset_version": event.ruleset_version,
        "status": "requested",
        "business_status": "delivered",
        "created_at": event.created_at,
        "updated_at": event.created_at,
        "ack_due": event.ack_due,
        "first_contact_due": event.first_contact_due,
        "decide_due": event.decide_due,
        "escalation": list(event.escalation),
        "escalation_level": 0,
        "sealed_view": event.sealed_view,
        "view_key_id": event.view_key_id,
        "version": 0,
    }


def _delivered_row(event: DeliveryCreated) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "referral_id": event.referral_id,
        "task_id": event.task_id,
        "kind": "delivered",
        "to_status": "requested",
        "business_status": "delivered",
        "actor_org": "hub",
        "actor_role": "system",
        "reason": f"rule {event.rule_id}",
        "at": event.created_at,
    }


def _refusal_row(refusal: Refusal) -> dict[str, Any]:
    return {
        "event_id": refusal.event_id,
        "referral_id": refusal.referral_id,
        "task_id": None,
        "kind": "refused",
        "actor_org": "hub",
        "actor_role": "system",
        "reason": f"{refusal.recipient_org}: {refusal.reason_code}",
        "at": refusal.at,
    }
