"""SQL lists behind the worklist, the referrer view and escalations; the directory as plain data."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hub.adapters.db import aware_row, deliveries, referrals
from hub.services.listing import PENDING, ListFilter

log = logging.getLogger(__name__)

_INBOX_COLUMNS = (
    "delivery_id",
    "task_id",
    "referral_id",
    "sender_org",
    "recipient_org",
    "status",
    "business_status",
    "priority",
    "risk_level",
    "reasons",
    "purpose",
    "legal_basis",
    "categories",
    "town",
    "created_at",
    "updated_at",
    "ack_due",
    "first_contact_due",
    "acknowledged_at",
    "decided_at",
    "first_contact_at",
    "closed_at",
    "view_key_id",
)
_SENT_DELIVERY_COLUMNS = (
    "delivery_id",
    "task_id",
    "referral_id",
    "recipient_org",
    "status",
    "business_status",
    "purpose",
    "legal_basis",
    "created_at",
    "ack_due",
    "first_contact_due",
    "acknowledged_at",
    "decided_at",
    "first_contact_at",
    "closed_at",
)


def _pending_first() -> Any:
    return sa.case((deliveries.c.status.in_(PENDING), 0), else_=1)


class SqlListing:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def inbox(
        self, org_id: str, flt: ListFilter, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        d = deliveries.c
        where: list[Any] = [d.recipient_org == org_id]
        if flt.statuses:
            where.append(d.status.in_(flt.statuses))
        if flt.risk_level is not None:
            where.append(d.risk_level == flt.risk_level)
        if flt.priority:
            where.append(d.priority == flt.priority)
        if flt.town:
            where.append(d.town == flt.town)
        if flt.since:
            where.append(d.created_at >= flt.since)
        if flt.until:
            where.append(d.created_at < flt.until)
        # Pending work first, then the most urgent, then the deadline that comes soonest.
        due = sa.func.coalesce(d.ack_due, d.first_contact_due, d.created_at)
        q = (
            sa.select(*[deliveries.c[c] for c in _INBOX_COLUMNS])
            .where(*where)
            .order_by(_pending_first(), d.risk_level.desc(), due, d.created_at)
            .limit(limit)
            .offset(offset)
        )
        count = sa.select(sa.func.count()).select_from(deliveries).where(*where)
        with self._engine.connect() as conn:
            items = [aware_row(r) for r in conn.execute(q).mappings()]
            total = int(conn.execute(count).scalar() or 0)
        return items, total

    def sent(self, org_id: str, flt: ListFilter, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        r = referrals.c
        where: list[Any] = [r.sender_org == org_id]
        if flt.risk_level is not None:
            where.append(r.risk_level == flt.risk_level)
        if flt.priority:
            where.append(r.priority == flt.priority)
        if flt.town:
            where.append(r.town == flt.town)
        if flt.since:
            where.append(r.submitted_at >= flt.since)
        if flt.until:
            where.append(r.submitted_at < flt.until)
        if flt.statuses:
            where.append(
                r.referral_id.in_(
                    sa.select(deliveries.c.referral_id).where(deliveries.c.status.in_(flt.statuses))
                )
            )
        q = (
            sa.select(
                r.referral_id,
                r.sender_org,
                r.risk_level,
                r.priority,
                r.reasons,
                r.town,
                r.submitted_at,
                r.routed_at,
            )
            .where(*where)
            .order_by(r.submitted_at.desc())
            .limit(limit)
            .offset(offset)
        )
        count = sa.select(sa.func.count()).select_from(referrals).where(*where)
        with self._engine.connect() as conn:
            items = [aware_row(x) for x in conn.execute(q).mappings()]
            total = int(conn.execute(count).scalar() or 0)
            ids = [i["referral_id"] for i in items]
            by_referral: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
            if ids:
                rows = conn.execute(
                    sa.select(*[deliveries.c[c] for c in _SENT_DELIVERY_COLUMNS])
                    .where(deliveries.c.referral_id.in_(ids))
                    .order_by(deliveries.c.created_at)
                ).mappings()
                for row in rows:
                    by_referral[row["referral_id"]].append(aware_row(row))
        for item in items:
            item["deliveries"] = by_referral.get(item["referral_id"], [])
        return items, total

    def overdue(self, org_id: str, now: datetime) -> list[dict[str, Any]]:
        d = deliveries.c
        late_ack = sa.and_(d.acknowledged_at.is_(None), d.ack_due.is_not(None), d.ack_due < now)
        late_contact = sa.and_(
            d.first_contact_at.is_(None), d.first_contact_due.is_not(None), d.first_contact_due < now
        )
        q = (
            sa.select(*[deliveries.c[c] for c in _INBOX_COLUMNS])
            .where(sa.or_(d.recipient_org == org_id, d.sender_org == org_id))
            .where(d.status.in_(PENDING))
            .where(sa.or_(late_ack, late_contact))
            .order_by(d.risk_level.desc(), sa.func.coalesce(d.ack_due, d.first_contact_due))
            .limit(500)
        )
        with self._engine.connect() as conn:
            return [aware_row(x) for x in conn.execute(q).mappings()]


class DirectoryReader:
    """The directory the hub routes with: the imported database copy if any, else the YAML file."""

    def __init__(self, engine: sa.Engine, yaml_path: Path, ttl_s: float = 30.0) -> None:
        self._engine = engine
        self._yaml = yaml_path
        self._ttl = ttl_s
        self._cached: tuple[float, dict[str, Any]] | None = None

    def directory(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self._ttl:
            self._cached = (now, self._load())
        return self._cached[1]

    def _load(self) -> dict[str, Any]:
        from hub.adapters.directory import SqlDirectoryRepository, directory_as_data, load_directory

        repo = SqlDirectoryRepository(self._engine)
        try:
            stored = repo.load()
        except Exception as exc:  # a broken stored copy must not take the API down; fall back to YAML
            log.warning(
                "directory in the database unreadable (%s); reading %s", type(exc).__name__, self._yaml
            )
            stored = None
        if stored is not None:
            source = "database"
            directory = stored
        else:
            source = str(self._yaml.name)
            directory = load_directory(self._yaml)
        return {**directory_as_data(directory), "version": directory.version, "source": source}
