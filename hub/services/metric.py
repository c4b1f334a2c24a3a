"""Turnaround metrics for the district dashboard: pure computation over de-identified delivery facts.

Every cell with fewer than ``SMALL_COUNT`` cases is suppressed (shown as "<5", no values), so a
figure can never single out a student. Facts carry no PII: organisations, town, risk level, times.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Protocol

from hub.domain.error import BadRequest, Forbidden, InvalidInput
from hub.services.port import Caller, Clock

SMALL_COUNT = 5
SUPPRESSED = "<5"
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")  # no daylight saving in China
_OPEN = frozenset({"requested", "received", "accepted", "in-progress", "on-hold"})
_NO_CONTACT_DUE = frozenset({"rejected", "cancelled", "entered-in-error", "failed"})


class Dimension(StrEnum):
    PAIR = "pair"  # sender agency -> recipient agency
    TOWN = "town"
    RISK = "risk"
    PERIOD = "period"


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True)
class DeliveryFact:
    """One delivery as the dashboard sees it: no student data, only agencies, place, risk and times."""

    sender_org: str
    recipient_org: str
    town: str | None
    risk_level: int
    legal_basis: str
    status: str
    submitted_at: datetime | None
    created_at: datetime
    ack_due: datetime | None = None
    first_contact_due: datetime | None = None
    acknowledged_at: datetime | None = None
    decided_at: datetime | None = None
    first_contact_at: datetime | None = None
    closed_at: datetime | None = None
    reviewed: bool = False  # an emergency-basis delivery a supervisor has reviewed (break-glass)


class MetricSource(Protocol):
    def delivery_facts(
        self, since: datetime | None, until: datetime | None, org_id: str | None
    ) -> list[DeliveryFact]:
        """Deliveries created in [since, until); with ``org_id`` only those it sent or received."""


@dataclass(frozen=True)
class Durations:
    """Median and 90th percentile in seconds, or suppressed."""

    n: int
    median_s: float | None
    p90_s: float | None

    @property
    def suppressed(self) -> bool:
        return self.n < SMALL_COUNT

    def as_dict(self) -> dict[str, Any]:
        if self.suppressed:
            return {"n": SUPPRESSED, "suppressed": True}
        return {"n": self.n, "median_s": self.median_s, "p90_s": self.p90_s, "suppressed": False}


@dataclass(frozen=True)
class Rate:
    """A share: ``n`` is the denominator; suppressed when the denominator is small."""

    n: int
    hits: int

    @property
    def suppressed(self) -> bool:
        return self.n < SMALL_COUNT

    @property
    def value(self) -> float | None:
        return None if self.suppressed or self.n == 0 else round(self.hits / self.n, 4)

    def as_dict(self) -> dict[str, Any]:
        if self.suppressed:
            return {"n": SUPPRESSED, "suppressed": True}
        return {"n": self.n, "rate": self.value, "suppressed": False}


@dataclass(frozen=True)
class Cell:
    """The metrics of one group (one agency pair, town, risk level or period)."""

    key: str
    n: int
    delivery_latency: Durations
    time_to_acknowledge: Durations
    time_to_decision: Durations
    time_to_first_contact: Durations
    rejection_rate: Rate
    closed_loop_rate: Rate
    ack_within_sla: Rate
    first_contact_within_sla: Rate
    open_breaches: int

    @property
    def suppressed(self) -> bool:
        return self.n < SMALL_COUNT

    def as_dict(self) -> dict[str, Any]:
        if self.suppressed:
            # The whole row goes: even a breach count of a tiny group could point at a child.
            return {"key": self.key, "n": SUPPRESSED, "suppressed": True}
        return {
            "key": self.key,
            "n": self.n,
            "suppressed": False,
            "delivery_latency": self.delivery_latency.as_dict(),
            "time_to_acknowledge": self.time_to_acknowledge.as_dict(),
            "time_to_decision": self.time_to_decision.as_dict(),
            "time_to_first_contact": self.time_to_first_contact.as_dict(),
            "rejection_rate": self.rejection_rate.as_dict(),
            "closed_loop_rate": self.closed_loop_rate.as_dict(),
            "ack_within_sla": self.ack_within_sla.as_dict(),
            "first_contact_within_sla": self.first_contact_within_sla.as_dict(),
            "open_breaches": _count(self.open_breaches),
        }


@dataclass(frozen=True)
class MetricsReport:
    by: Dimension
    period: Period
    since: datetime | None
    until: datetime | None
    scope: str  # "district" or the supervisor's organisation
    generated_at: datetime
    overall: Cell
    groups: list[Cell]
    legal_basis: dict[str, Rate] = field(default_factory=dict)
    # Emergency-basis disclosures (n) and how many a supervisor has reviewed (hits).
    break_glass: Rate = field(default_factory=lambda: Rate(0, 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by.value,
            "period": self.period.value,
            "since": self.since,
            "until": self.until,
            "scope": self.scope,
            "generated_at": self.generated_at,
            "small_count_threshold": SMALL_COUNT,
            "overall": self.overall.as_dict(),
            "groups": [g.as_dict() for g in self.groups],
            "legal_basis_share": {k: _share(v) for k, v in sorted(self.legal_basis.items())},
            "break_glass": {"uses": _count(self.break_glass.n), "reviewed": _share(self.break_glass)},
        }


# ------------------------------------------------------------------------------------------ maths


def _share(rate: Rate) -> dict[str, Any]:
    """A share of disclosures: the count itself is a count of cases, so it is suppressed too."""
    count = _count(rate.hits)
    if rate.suppressed or count == SUPPRESSED:
        return {"n": rate.n if not rate.suppressed else SUPPRESSED, "count": SUPPRESSED, "suppressed": True}
    return {"n": rate.n, "count": count, "rate": rate.value, "suppressed": False}


def _count(value: int) -> int | str:
    """A count of cases: zero and five or more are shown, one to four are not."""
    return value if value == 0 or value >= SMALL_COUNT else SUPPRESSED


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (the common "type 7" definition)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = q * (len(ordered) - 1)
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def durations(values: Iterable[float]) -> Durations:
    data = [v for v in values if v >= 0]
    if len(data) < SMALL_COUNT:
        return Durations(len(data), None, None)
    return Durations(len(data), round(quantile(data, 0.5), 1), round(quantile(data, 0.9), 1))


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def _present(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _accepted(f: DeliveryFact) -> bool:
    return f.decided_at is not None and f.status != "rejected"


def _sla(due: datetime | None, done: datetime | None, now: datetime) -> bool | None:
    """True met, False breached, None not measurable yet (or no SLA)."""
    if due is None:
        return None
    if done is not None:
        return done <= due
    return False if now > due else None


def cell(key: str, facts: Sequence[DeliveryFact], now: datetime) -> Cell:
    ack_sla = [_sla(f.ack_due, f.acknowledged_at, now) for f in facts]
    contact_sla = [
        _sla(f.first_contact_due, f.first_contact_at, now)
        for f in facts
        if not (f.status in _NO_CONTACT_DUE and f.first_contact_at is None)
    ]
    decided = [f for f in facts if f.decided_at is not None]
    accepted = [f for f in facts if _accepted(f)]
    breaches = sum(
        1
        for f in facts
        if f.status in _OPEN
        and (
            (f.acknowledged_at is None and f.ack_due is not None and now > f.ack_due)
            or (f.first_contact_at is None and f.first_contact_due is not None and now > f.first_contact_due)
        )
    )
    return Cell(
        key=key,
        n=len(facts),
        delivery_latency=durations(_present(_seconds(f.submitted_at, f.created_at) for f in facts)),
        time_to_acknowledge=durations(_present(_seconds(f.created_at, f.acknowledged_at) for f in facts)),
        time_to_decision=durations(_present(_seconds(f.created_at, f.decided_at) for f in facts)),
        time_to_first_contact=durations(_present(_seconds(f.created_at, f.first_contact_at) for f in facts)),
        rejection_rate=Rate(len(decided), sum(1 for f in decided if f.status == "rejected")),
        closed_loop_rate=Rate(len(accepted), sum(1 for f in accepted if f.status == "completed")),
        ack_within_sla=Rate(sum(1 for s in ack_sla if s is not None), sum(1 for s in ack_sla if s)),
        first_contact_within_sla=Rate(
            sum(1 for s in contact_sla if s is not None), sum(1 for s in contact_sla if s)
        ),
        open_breaches=breaches,
    )


def period_key(at: datetime, period: Period) -> str:
    local = at.astimezone(SHANGHAI)
    if period is Period.DAY:
        return local.strftime("%Y-%m-%d")
    if period is Period.WEEK:
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return local.strftime("%Y-%m")


def _key_of(by: Dimension, period: Period) -> Callable[[DeliveryFact], str]:
    if by is Dimension.PAIR:
        return lambda f: f"{f.sender_org} → {f.recipient_org}"
    if by is Dimension.TOWN:
        return lambda f: f.town or "unknown"
    if by is Dimension.RISK:
        return lambda f: str(f.risk_level)
    return lambda f: period_key(f.created_at, period)


def compute(
    facts: Sequence[DeliveryFact],
    by: Dimension,
    period: Period,
    now: datetime,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    scope: str = "district",
) -> MetricsReport:
    key = _key_of(by, period)
    grouped: dict[str, list[DeliveryFact]] = defaultdict(list)
    for f in facts:
        grouped[key(f)].append(f)
    ordering: Callable[[str], Any] = (lambda k: -int(k)) if by is Dimension.RISK else (lambda k: k)
    bases: dict[str, int] = defaultdict(int)
    for f in facts:
        bases[f.legal_basis] += 1
    emergency = [f for f in facts if f.legal_basis == "emergency"]
    return MetricsReport(
        by=by,
        period=period,
        since=since,
        until=until,
        scope=scope,
        generated_at=now,
        overall=cell("all", facts, now),
        groups=[cell(k, grouped[k], now) for k in sorted(grouped, key=ordering)],
        legal_basis={b: Rate(len(facts), c) for b, c in bases.items()},
        break_glass=Rate(len(emergency), sum(f.reviewed for f in emergency)),
    )


# ------------------------------------------------------------------------------------------ use case

ALL_DIMENSIONS = tuple(d.value for d in Dimension)
MONITOR_ROLES = frozenset({"district-monitor"})
SCOPED_ROLES = frozenset({"supervisor"})


class DashboardMetrics:
    """The district monitor sees the whole district; a supervisor sees the flows of their agency."""

    def __init__(self, source: MetricSource, clock: Clock) -> None:
        self._source = source
        self._clock = clock

    def report(
        self,
        caller: Caller,
        by: str = "pair",
        period: str = "week",
        since: datetime | None = None,
        until: datetime | None = None,
        town: str | None = None,
        risk_level: int | None = None,
    ) -> MetricsReport:
        return self.reports(caller, (by,), period, since, until, town, risk_level)[by]

    def reports(
        self,
        caller: Caller,
        dimensions: Sequence[str] = ALL_DIMENSIONS,
        period: str = "week",
        since: datetime | None = None,
        until: datetime | None = None,
        town: str | None = None,
        risk_level: int | None = None,
    ) -> dict[str, MetricsReport]:
        """One report per dimension over the same facts (read once)."""
        if caller.role in MONITOR_ROLES:
            scope_org = None
        elif caller.role in SCOPED_ROLES:
            scope_org = caller.org_id
        else:
            raise Forbidden(f"role '{caller.role}' does not see dashboard metrics", code="role-forbidden")
        try:
            dims, per = [Dimension(d) for d in dimensions], Period(period)
        except ValueError:
            raise InvalidInput(
                f"by must be one of {[d.value for d in Dimension]} and period one of "
                f"{[p.value for p in Period]}",
                code="metrics-query-invalid",
            ) from None
        if since and until and since >= until:
            raise BadRequest("'since' must be before 'until'", code="range-invalid")
        facts = self._source.delivery_facts(since, until, scope_org)
        if town:
            facts = [f for f in facts if f.town == town]
        if risk_level is not None:
            facts = [f for f in facts if f.risk_level == risk_level]
        now = self._clock.now()
        return {
            d.value: compute(facts, d, per, now, since=since, until=until, scope=scope_org or "district")
            for d in dims
        }
