"""SQL source of de-identified delivery facts for the dashboard metrics (no pseudonyms, no content)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.adapters.db import aware, break_glass_reviews, deliveries, referrals
from hub.services.metric import DeliveryFact


class SqlMetricSource:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def delivery_facts(
        self, since: datetime | None, until: datetime | None, org_id: str | None
    ) -> list[DeliveryFact]:
        d = deliveries.c
        q = sa.select(
            d.sender_org,
            d.recipient_org,
            d.town,
            d.risk_level,
            d.legal_basis,
            d.status,
            referrals.c.submitted_at,
            d.created_at,
            d.ack_due,
            d.first_contact_due,
            d.acknowledged_at,
            d.decided_at,
            d.first_contact_at,
            d.closed_at,
            break_glass_reviews.c.delivery_id.is_not(None).label("reviewed"),
        ).select_from(
            deliveries.outerjoin(referrals, referrals.c.referral_id == d.referral_id).outerjoin(
                break_glass_reviews, break_glass_reviews.c.delivery_id == d.delivery_id
            )
        )
        if since is not None:
            q = q.where(d.created_at >= since)
        if until is not None:
            q = q.where(d.created_at < until)
        if org_id is not None:
            q = q.where(sa.or_(d.sender_org == org_id, d.recipient_org == org_id))
        with self._engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        facts = []
        for r in rows:
            values: dict[str, Any] = {k: aware(v) for k, v in r.items()}
            values["reviewed"] = bool(values["reviewed"])  # SQLite answers IS NOT NULL with 0/1
            facts.append(DeliveryFact(**values))
        return facts
