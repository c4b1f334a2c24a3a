"""The break-glass review store and the dashboard's facts, on PostgreSQL and on the embedded SQLite default.

A supervisor's list holds only their agency's emergency-basis deliveries, the longest-waiting
unreviewed first; a delivery keeps its first review; the dashboard's facts say which uses were
reviewed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.support.readmodel import delivery_row

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
HOTLINE = "district-centre"


def _review(delivery_id: str, outcome: str, minutes: int) -> object:
    from hub.services.breakglass import BreakGlassReview

    return BreakGlassReview(
        delivery_id=delivery_id,
        referral_id="r-" + delivery_id,
        sender_org=HOTLINE,
        recipient_org="sj-camhs-1",
        outcome=outcome,
        guardian_notice="informed",
        reviewed_by_role="supervisor",
        reviewed_by_user="u-1",
        reviewed_at=AT + timedelta(minutes=minutes),
        audit_event_id=f"ev-{delivery_id}-{outcome}",
    )


def test_uses_reviews_and_dashboard_facts(engine: sa.Engine) -> None:
    from hub.adapters.breakglasssql import SqlBreakGlassStore
    from hub.adapters.db import deliveries
    from hub.adapters.metricsql import SqlMetricSource

    emergency = {"legal_basis": "emergency", "sender_org": HOTLINE, "risk_level": 4}
    rows = [
        delivery_row("bg-late", AT + timedelta(hours=2), **emergency),
        delivery_row("bg-early", AT, **emergency),
        delivery_row("bg-done", AT + timedelta(hours=1), **emergency),
        delivery_row("consent-1", AT, sender_org=HOTLINE),  # not break-glass
        delivery_row("bg-other", AT, legal_basis="emergency", sender_org="police-songjiang"),
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(deliveries), rows)
    store = SqlBreakGlassStore(engine)

    assert store.emergency_use("consent-1") is None
    use = store.emergency_use("bg-done")
    assert use is not None and use["sender_org"] == HOTLINE and use["created_at"].tzinfo is not None

    assert store.record(_review("bg-done", "justified", 90)) is True  # type: ignore[arg-type]
    assert store.record(_review("bg-done", "not-justified", 95)) is False  # type: ignore[arg-type]
    first = store.review_of("bg-done")
    assert first is not None and first["outcome"] == "justified"
    assert store.review_of("bg-early") is None

    listed = store.uses(HOTLINE, None)
    assert [u["delivery_id"] for u in listed] == ["bg-early", "bg-late", "bg-done"]
    assert listed[0]["review"] is None
    assert listed[2]["review"]["outcome"] == "justified"
    assert listed[2]["review"]["reviewed_at"] == AT + timedelta(minutes=90)
    assert [u["delivery_id"] for u in store.uses(HOTLINE, "pending")] == ["bg-early", "bg-late"]
    assert [u["delivery_id"] for u in store.uses(HOTLINE, "reviewed")] == ["bg-done"]
    assert [u["delivery_id"] for u in store.uses("police-songjiang", None)] == ["bg-other"]

    facts = {
        (f.sender_org, f.created_at, f.legal_basis): f.reviewed
        for f in SqlMetricSource(engine).delivery_facts(None, None, HOTLINE)
    }
    assert sorted(facts.values()) == [False, False, False, True]
    assert facts[(HOTLINE, AT + timedelta(hours=1), "emergency")] is True
