"""The delivery key vault: sealed views with their wrapped data keys, written once, destroyable."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.adapters.db import delivery_consents, delivery_keys, insert_many, writing
from hub.services.port import StoredSeal


class SqlKeyVault:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def put_many(self, seals: Sequence[StoredSeal]) -> dict[str, StoredSeal]:
        """Store each seal unless one exists for its delivery: delivery id -> the seal that is stored.

        A worker that crashed after sealing re-seals with a fresh data key on restart; keeping the
        first seal makes the ciphertext on Kafka, in the read model and here the same. One
        transaction for the batch.
        """
        if not seals:
            return {}
        with writing(self._engine) as conn:  # joins the routing batch's unit of work
            inserted = insert_many(conn, delivery_keys, [_row_of(seal) for seal in seals])
            links = [
                {"consent_id": consent_id, "delivery_id": seal.delivery_id}
                for seal in seals
                if seal.delivery_id in inserted
                for consent_id in seal.consent_ids
            ]
            insert_many(conn, delivery_consents, links)
            stored = {seal.delivery_id: seal for seal in seals if seal.delivery_id in inserted}
            missing = [seal.delivery_id for seal in seals if seal.delivery_id not in inserted]
            if missing:  # a redelivery: the first seal stands (no read-back in the usual case)
                rows = conn.execute(
                    sa.select(delivery_keys).where(delivery_keys.c.delivery_id.in_(missing))
                ).mappings()
                stored.update((row["delivery_id"], _seal(row)) for row in rows)
        return stored

    def get(self, delivery_id: str) -> StoredSeal | None:
        with self._engine.connect() as conn:
            row = (
                conn.execute(sa.select(delivery_keys).where(delivery_keys.c.delivery_id == delivery_id))
                .mappings()
                .first()
            )
        return _seal(row) if row else None

    def mark_opened(self, delivery_id: str, at: datetime) -> bool:
        """Record the first opening; return True only for the first one."""
        with self._engine.begin() as conn:
            return bool(
                conn.execute(
                    delivery_keys.update()
                    .where(delivery_keys.c.delivery_id == delivery_id)
                    .where(delivery_keys.c.first_opened_at.is_(None))
                    .values(first_opened_at=at)
                ).rowcount
            )

    def destroy(self, delivery_id: str, at: datetime, reason: str) -> bool:
        with self._engine.begin() as conn:
            return bool(
                conn.execute(
                    delivery_keys.update()
                    .where(delivery_keys.c.delivery_id == delivery_id)
                    .where(delivery_keys.c.wrapped_key.is_not(None))
                    .values(wrapped_key=None, destroyed_at=at, destroyed_reason=reason)
                ).rowcount
            )

    def unopened_under_consent(self, consent_id: str) -> list[StoredSeal]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(delivery_keys)
                .join(delivery_consents, delivery_consents.c.delivery_id == delivery_keys.c.delivery_id)
                .where(delivery_consents.c.consent_id == consent_id)
                .where(delivery_keys.c.first_opened_at.is_(None))
                .where(delivery_keys.c.wrapped_key.is_not(None))
            ).mappings()
            return [_seal(r) for r in rows]


def _row_of(seal: StoredSeal) -> dict[str, Any]:
    return {
        "delivery_id": seal.delivery_id,
        "referral_id": seal.referral_id,
        "recipient_org": seal.recipient_org,
        "recipient_key_id": seal.recipient_key_id,
        "ciphertext": seal.ciphertext,
        "wrapped_key": seal.wrapped_key,
        "signature": seal.signature,
        "consent_ids": list(seal.consent_ids),
        "created_at": seal.created_at,
    }


def _seal(row: Any) -> StoredSeal:
    return StoredSeal(
        delivery_id=row["delivery_id"],
        referral_id=row["referral_id"],
        recipient_org=row["recipient_org"],
        recipient_key_id=row["recipient_key_id"],
        ciphertext=row["ciphertext"],
        wrapped_key=row["wrapped_key"],
        signature=row["signature"],
        consent_ids=tuple(row["consent_ids"] or ()),
        created_at=row["created_at"],
        first_opened_at=row["first_opened_at"],
        destroyed_at=row["destroyed_at"],
    )
