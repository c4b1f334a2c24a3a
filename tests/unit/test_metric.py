"""Dashboard metrics: percentiles, rates, SLA shares, scoping, and small-count suppression."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from hub.domain.error import BadRequest, Forbidden
from hub.services.metric import (
    SUPPRESSED,
    DashboardMetrics,
    DeliveryFact,
    Dimension,
    Period,
    compute,
    period_key,
    quantile,
)
from hub.services.port import Caller

T0 = datetime(2025, 3, 3, 0, 0, tzinfo=UTC)  # a Monday, 08:00 in Shanghai
NOW = T0 + timedelta(days=10)


def fact(i: int = 0, **kw: object) -> DeliveryFact:
    base = DeliveryFact(
        sender_org="school-a",
        recipient_org="camhs-b",
        town="yueyang",
        risk_level=3,
        legal_basis="consent",
        status="completed",
        submitted_at=T0,
        created_at=T0 + timedelta(seconds=1),
        ack_due=T0 + timedelta(hours=24),
        first_contact_due=T0 + timedelta(days=7),
        acknowledged_at=T0 + timedelta(minutes=10 * (i + 1)),
        decided_at=T0 + timedelta(hours=i + 1),
        first_contact_at=T0 + timedelta(days=1),
        closed_at=T0 + timedelta(days=2),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


class FakeSource:
    def __init__(self, facts: list[DeliveryFact]) -> None:
        self.facts = facts
        self.asked: list[str | None] = []

    def delivery_facts(self, since: object, until: object, org_id: str | None) -> list[DeliveryFact]:
        self.asked.append(org_id)
        return [f for f in self.facts if org_id is None or org_id in (f.sender_org, f.recipient_org)]


class FixedClock:
    def now(self) -> datetime:
        return NOW


def test_quantile_interpolates_between_ranks() -> None:
    assert quantile([1, 2, 3, 4, 5], 0.5) == 3
    assert quantile([10, 20], 0.9) == pytest.approx(19)
    assert quantile([7], 0.9) == 7


def test_medians_p90_and_rates_over_enough_cases() -> None:
    facts = [fact(i) for i in range(10)]
    facts[0] = fact(0, status="rejected", first_contact_at=None, closed_at=None)
    report = compute(facts, Dimension.PAIR, Period.WEEK, NOW)
    cell = report.overall.as_dict()
    assert cell["n"] == 10
    ack = cell["time_to_acknowledge"]
    assert ack["median_s"] == pytest.approx((50 + 60) / 2 * 60 - 1, abs=1)
    assert ack["p90_s"] > ack["median_s"]
    assert cell["rejection_rate"] == {"n": 10, "rate": 0.1, "suppressed": False}
    # closed loop = completed / accepted (the rejected one was never accepted)
    assert cell["closed_loop_rate"] == {"n": 9, "rate": 1.0, "suppressed": False}
    assert cell["ack_within_sla"]["rate"] == 1.0
    # a rejected delivery owes no first contact
    assert cell["first_contact_within_sla"]["n"] == 9


def test_sla_breaches_count_open_overdue_work_and_late_acks() -> None:
    late = [fact(i, acknowledged_at=T0 + timedelta(hours=30)) for i in range(5)]
    open_overdue = [
        fact(
            i,
            status="requested",
            acknowledged_at=None,
            decided_at=None,
            first_contact_at=None,
            closed_at=None,
        )
        for i in range(5)
    ]
    cell = compute(late + open_overdue, Dimension.PAIR, Period.WEEK, NOW).overall.as_dict()
    assert cell["ack_within_sla"] == {"n": 10, "rate": 0.0, "suppressed": False}
    assert cell["open_breaches"] == 5


def test_small_groups_are_suppressed_entirely() -> None:
    facts = [fact(i) for i in range(6)] + [fact(i, town="sijing") for i in range(4)]
    report = compute(facts, Dimension.TOWN, Period.WEEK, NOW).as_dict()
    by_key = {g["key"]: g for g in report["groups"]}
    assert by_key["sijing"] == {"key": "sijing", "n": SUPPRESSED, "suppressed": True}
    assert by_key["yueyang"]["n"] == 6
    # a metric whose own denominator is small is suppressed even in a large group
    few_decided = [fact(i, decided_at=None, status="received") for i in range(6)] + [fact(0)]
    cell = compute(few_decided, Dimension.PAIR, Period.WEEK, NOW).overall.as_dict()
    assert cell["time_to_decision"] == {"n": SUPPRESSED, "suppressed": True}
    assert cell["rejection_rate"] == {"n": SUPPRESSED, "suppressed": True}


def test_breach_counts_and_legal_basis_counts_of_one_to_four_are_hidden() -> None:
    facts = [fact(i) for i in range(8)] + [fact(0, legal_basis="emergency")]
    facts.append(fact(0, status="requested", acknowledged_at=None, decided_at=None, first_contact_at=None))
    report = compute(facts, Dimension.PAIR, Period.WEEK, NOW).as_dict()
    assert report["overall"]["open_breaches"] == SUPPRESSED
    assert report["legal_basis_share"]["emergency"]["count"] == SUPPRESSED
    assert report["legal_basis_share"]["consent"]["count"] == 9


def test_break_glass_uses_and_share_reviewed_with_small_counts_suppressed() -> None:
    consented = [fact(i) for i in range(6)]
    reviewed = [fact(i, legal_basis="emergency", reviewed=True) for i in range(4)]
    open_ = [fact(i, legal_basis="emergency") for i in range(2)]
    # A review flag on a consent-based delivery counts for nothing.
    stray = [fact(0, reviewed=True)]
    report = compute(consented + reviewed + open_ + stray, Dimension.PAIR, Period.WEEK, NOW).as_dict()
    # 6 uses, 4 reviewed: the use count shows, the reviewed count (1-4) does not, nor its rate.
    assert report["break_glass"] == {"uses": 6, "reviewed": {"n": 6, "count": SUPPRESSED, "suppressed": True}}
    more = [*reviewed, fact(9, legal_basis="emergency", reviewed=True), *open_]
    report = compute(consented + more, Dimension.PAIR, Period.WEEK, NOW).as_dict()
    assert report["break_glass"]["reviewed"] == {
        "n": 7,
        "count": 5,
        "rate": round(5 / 7, 4),
        "suppressed": False,
    }
    few = compute(consented + open_, Dimension.PAIR, Period.WEEK, NOW).as_dict()
    assert few["break_glass"] == {
        "uses": SUPPRESSED,
        "reviewed": {"n": SUPPRESSED, "count": SUPPRESSED, "suppressed": True},
    }
    none = compute(consented, Dimension.PAIR, Period.WEEK, NOW).as_dict()
    assert none["break_glass"]["uses"] == 0


def test_groups_by_risk_and_period_in_shanghai_time() -> None:
    assert period_key(datetime(2025, 3, 2, 17, 0, tzinfo=UTC), Period.DAY) == "2025-03-03"
    assert period_key(T0, Period.WEEK) == "2025-W10"
    assert period_key(T0, Period.MONTH) == "2025-03"
    facts = [fact(i, risk_level=4) for i in range(5)] + [fact(i) for i in range(5)]
    keys = [g.key for g in compute(facts, Dimension.RISK, Period.WEEK, NOW).groups]
    assert keys == ["4", "3"]


def test_nothing_identifying_leaves_the_report() -> None:
    report = compute([fact(i) for i in range(6)], Dimension.PAIR, Period.WEEK, NOW).as_dict()
    text = repr(report)
    assert "psn:" not in text
    assert "ref-" not in text


def test_monitor_sees_the_district_supervisor_their_agency_others_nothing() -> None:
    source = FakeSource([fact(i) for i in range(6)] + [fact(i, recipient_org="police-c") for i in range(6)])
    metrics = DashboardMetrics(source, FixedClock())
    assert metrics.report(Caller("district-office", "district-monitor")).scope == "district"
    scoped = metrics.report(Caller("police-c", "supervisor"))
    assert scoped.scope == "police-c"
    assert [g.key for g in scoped.groups] == ["school-a → police-c"]
    for role in ("clinician", "case-worker", "referrer", "auditor", "admin", "system"):
        with pytest.raises(Forbidden):
            metrics.report(Caller("camhs-b", role))
    with pytest.raises(BadRequest):
        metrics.report(Caller("d", "district-monitor"), since=NOW, until=T0)
