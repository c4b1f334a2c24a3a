"""SQL store of break-glass reviews (``hub.services.breakglass.BreakGlassStore``): ids, codes and times."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from hub.adapters.db import aware_row, break_glass_reviews, deliveries, insert_once
from hub.services.breakglass import BreakGlassReview

_USE_COLUMNS = (
    deliveries.c.delivery_id,
    deliveries.c.task_id,
    deliveries.c.referral_id,
    deliveries.c.sender_org,
    deliveries.c.recipient_org,
    deliveries.c.purpose,
    deliveries.c.categories,
    deliveries.c.risk_level,
    deliveries.c.priority,
    deliveries.c.status,
    deliveries.c.created_at,
)
_REVIEW_COLUMNS = ("outcome", "guardian_notice", "reviewed_by_role", "reviewed_by_user", "reviewed_at")


class SqlBreakGlassStore:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def emergency_use(self, delivery_id: str) -> dict[str, Any] | None:
        q = sa.select(*_USE_COLUMNS).where(
            deliveries.c.delivery_id == delivery_id, deliveries.c.legal_basis == "emergency"
        )
        with self._engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return aware_row(row) if row is not None else None

    def uses(self, sender_org: str, status: str | None) -> list[dict[str, Any]]:
        r = break_glass_reviews.c
        q = (
            sa.select(*_USE_COLUMNS, *(r[c] for c in _REVIEW_COLUMNS))
            .select_from(deliveries.outerjoin(break_glass_reviews, r.delivery_id == deliveries.c.delivery_id))
            .where(deliveries.c.sender_org == sender_org, deliveries.c.legal_basis == "emergency")
        )
        if status == "pending":
            q = q.where(r.delivery_id.is_(None))
        elif status == "reviewed":
            q = q.where(r.delivery_id.is_not(None))
        # The longest-waiting unreviewed first, then the latest reviews.
        q = q.order_by(r.reviewed_at.is_not(None), r.reviewed_at.desc(), deliveries.c.created_at)
        with self._engine.connect() as conn:
            rows = [aware_row(m) for m in conn.execute(q).mappings()]
        out = []
        for row in rows:
            review = {c: row.pop(c) for c in _REVIEW_COLUMNS}
            out.append({**row, "review": review if review["outcome"] is not None else None})
        return out

    def record(self, review: BreakGlassReview) -> bool:
        with self._engine.begin() as conn:
            return insert_once(
                conn,
                break_glass_reviews,
                {
                    "delivery_id": review.delivery_id,
                    "referral_id": review.referral_id,
                    "sender_org": review.sender_org,
                    "outcome": review.outcome,
                    "guardian_notice": review.guardian_notice,
                    "reviewed_by_role": review.reviewed_by_role,
                    "reviewed_by_user": review.reviewed_by_user,
                    "reviewed_at": review.reviewed_at,
                    "audit_event_id": review.audit_event_id,
                },
            )

    def review_of(self, delivery_id: str) -> dict[str, Any] | None:
        q = sa.select(break_glass_reviews).where(break_glass_reviews.c.delivery_id == delivery_id)
        with self._engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return aware_row(row) if row is not None else None
