"""Read-side lists for staff and connectors: worklist, sent referrals, escalations, directory.

Each list is scoped here, by role and agency, before anything is read; the adapters only filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from hub.domain.error import Forbidden, InvalidInput
from hub.services.port import Caller, Clock

INBOX_ROLES = frozenset({"system", "clinician", "case-worker", "supervisor"})
SENT_ROLES = frozenset({"system", "referrer", "supervisor"})
ESCALATION_ROLES = frozenset({"supervisor"})
# Everyone signed in may read the directory: it names agencies and duty posts, never people.
DIRECTORY_ROLES = frozenset(
    {"system", "clinician", "case-worker", "referrer", "supervisor", "district-monitor", "auditor", "admin"}
)
STATUSES = (
    "requested",
    "received",
    "accepted",
    "rejected",
    "in-progress",
    "on-hold",
    "completed",
    "failed",
    "cancelled",
    "entered-in-error",
)
PENDING = ("requested", "received", "accepted", "in-progress", "on-hold")
PRIORITIES = ("routine", "urgent", "asap", "stat")


@dataclass(frozen=True)
class ListFilter:
    statuses: tuple[str, ...] = ()
    risk_level: int | None = None
    priority: str | None = None
    town: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        nxt = self.offset + self.limit if self.offset + self.limit < self.total else None
        return {
            "items": self.items,
            "count": len(self.items),
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
            "next_offset": nxt,
            **self.extra,
        }


class ListingSource(Protocol):
    def inbox(
        self, org_id: str, flt: ListFilter, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]: ...

    def sent(self, org_id: str, flt: ListFilter, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Referrals the organisation sent, each with ``deliveries`` (recipient, status, times)."""

    def overdue(self, org_id: str, now: datetime) -> list[dict[str, Any]]:
        """Open deliveries of the organisation (either side) past their acknowledgement or contact due."""


class DirectorySource(Protocol):
    def directory(self) -> dict[str, Any]:
        """``{"version", "source", "towns": [...], "organisations": [...]}`` as plain data."""


def check_filter(flt: ListFilter) -> ListFilter:
    bad = [s for s in flt.statuses if s not in STATUSES]
    if bad:
        raise InvalidInput(
            f"unknown status {bad[0]!r}",
            details=[{"path": "$.status", "rule": "code-unknown", "message": ", ".join(STATUSES)}],
            code="filter-invalid",
        )
    if flt.priority and flt.priority not in PRIORITIES:
        raise InvalidInput(f"unknown priority {flt.priority!r}", code="filter-invalid")
    if flt.risk_level is not None and not 1 <= flt.risk_level <= 4:
        raise InvalidInput("risk_level is 1..4", code="filter-invalid")
    return flt


def _require(caller: Caller, roles: frozenset[str], what: str) -> None:
    if caller.role not in roles:
        raise Forbidden(f"role '{caller.role}' cannot read {what}", code="role-forbidden")


def sla_clock(item: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Which deadline runs for this delivery now, and the seconds left (negative: overdue)."""
    status = item.get("status")
    due: datetime | None = None
    kind = None
    if status == "requested":
        due, kind = item.get("ack_due"), "acknowledge"
    elif status in ("received", "accepted"):
        due, kind = item.get("first_contact_due"), "first-contact"
    if due is None:
        return {"sla_kind": None, "sla_due": None, "sla_seconds_left": None, "sla_breached": False}
    left = int((due - now).total_seconds())
    return {"sla_kind": kind, "sla_due": due, "sla_seconds_left": left, "sla_breached": left < 0}


class Listings:
    def __init__(self, source: ListingSource, directory: DirectorySource, clock: Clock) -> None:
        self._source = source
        self._directory = directory
        self._clock = clock

    def inbox(self, caller: Caller, flt: ListFilter, limit: int = 50, offset: int = 0) -> Page:
        _require(caller, INBOX_ROLES, "an inbox")
        items, total = self._source.inbox(caller.org_id, check_filter(flt), limit, offset)
        now = self._clock.now()
        return Page([{**i, **sla_clock(i, now)} for i in items], total, limit, offset)

    def sent(self, caller: Caller, flt: ListFilter, limit: int = 50, offset: int = 0) -> Page:
        _require(caller, SENT_ROLES, "sent referrals")
        items, total = self._source.sent(caller.org_id, check_filter(flt), limit, offset)
        return Page(items, total, limit, offset)

    def escalations(self, caller: Caller) -> list[dict[str, Any]]:
        _require(caller, ESCALATION_ROLES, "escalations")
        now = self._clock.now()
        return [{**i, **sla_clock(i, now)} for i in self._source.overdue(caller.org_id, now)]

    def directory(
        self,
        caller: Caller,
        agency_type: str | None = None,
        town: str | None = None,
        active: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page:
        _require(caller, DIRECTORY_ROLES, "the directory")
        data = self._directory.directory()
        orgs = data.get("organisations", [])
        if agency_type:
            orgs = [o for o in orgs if o.get("type") == agency_type]
        if town:
            orgs = [o for o in orgs if o.get("towns") == "all" or town in (o.get("towns") or [])]
        if active is not None:
            orgs = [o for o in orgs if bool(o.get("active", True)) == active]
        return Page(
            orgs[offset : offset + limit],
            len(orgs),
            limit,
            offset,
            extra={
                "version": data.get("version"),
                "source": data.get("source"),
                "towns": data.get("towns", []),
            },
        )
