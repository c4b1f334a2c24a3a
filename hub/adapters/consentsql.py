"""Consent state and delivery withdrawals in the read model."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from hub.adapters.db import consents, deliveries, insert_once, reading, timeline
from schemas.envelope import ConsentChanged, DeliveryWithdrawn


class SqlConsents:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def record(self, event: ConsentChanged) -> bool:
        values = {
            "consent_id": event.consent_id,
            "student_pseudonym": event.student_pseudonym,
            "status": event.status,
            "sender_org": event.sender_org,
            "updated_at": event.at,
            "last_event_id": event.event_id[:80],
        }
        with self._engine.begin() as conn:
            stmt = self._insert(consents).values(**values)
            # A revocation is final for that consent id: a later "active" for it needs a new consent.
            stmt = stmt.on_conflict_do_update(
                index_elements=[consents.c.consent_id],
                set_={
                    "status": stmt.excluded.status,
                    "updated_at": stmt.excluded.updated_at,
                    "last_event_id": stmt.excluded.last_event_id,
                },
                where=consents.c.status == "active",
            )
            return conn.execute(stmt.returning(consents.c.consent_id)).first() is not None

    def statuses(self, consent_ids: Sequence[str]) -> dict[str, str]:
        if not consent_ids:
            return {}
        with reading(self._engine) as conn:  # joins the routing batch's unit of work
            rows = conn.execute(
                sa.select(consents.c.consent_id, consents.c.status).where(
                    consents.c.consent_id.in_(consent_ids)
                )
            )
            return {r.consent_id: r.status for r in rows}

    def task_of(self, delivery_id: str) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(
                sa.select(deliveries.c.task_id).where(deliveries.c.delivery_id == delivery_id)
            ).scalar()

    def record_withdrawal(self, event: DeliveryWithdrawn) -> bool:
        with self._engine.begin() as conn:
            inserted = insert_once(
                conn,
                timeline,
                dict(
                    event_id=event.event_id,
                    referral_id=event.referral_id,
                    task_id=event.task_id or None,
                    kind="withdrawn",
                    actor_org="hub",
                    actor_role="system",
                    reason=f"consent {event.consent_id} revoked; delivery key destroyed",
                    at=event.at,
                ),
            )
            if inserted:
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.delivery_id == event.delivery_id)
                    .values(
                        status="cancelled",
                        business_status="withdrawn",
                        closed_at=event.at,
                        updated_at=event.at,
                        version=deliveries.c.version + 1,
                    )
                )
            return bool(inserted)
