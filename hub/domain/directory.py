"""The organisation directory: who serves which town or school, and which CAMHS clinic is on duty (pure)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from schemas.envelope import AGENCY_TYPES as AGENCY_TYPES  # re-exported: routing reads it here
from schemas.envelope import AgencyType

# China has had no daylight saving time since 1991; a fixed offset keeps the domain free of tz data.
CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")

# Agency types whose recipient depends on the student: everything else serves the whole district
# unless the directory narrows it with ``towns``.
TOWN_SCOPED: frozenset[str] = frozenset({AgencyType.STREET_CENTRE.value})
SCHOOL_SCOPED: frozenset[str] = frozenset({AgencyType.SCHOOL.value})

WEEKDAYS: Mapping[str, int] = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}


@dataclass(frozen=True, slots=True)
class Town:
    """A street (街道) or town (镇) of the district, by a stable lower-case code."""

    code: str
    name_zh: str
    name_en: str
    kind: str = "town"  # street | town


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A public key registered for an organisation; the key material is base64 text."""

    kid: str
    use: str  # sign | seal
    alg: str
    key: str


@dataclass(frozen=True, slots=True)
class EscalationContact:
    """Whom to call when an SLA breaks: a role and a phone number, never a named person."""

    role_zh: str
    role_en: str
    phone: str


@dataclass(frozen=True, slots=True)
class DutySlot:
    """One on-duty window: the weekdays (1 = Monday) or the dates, and a local [start, end) time range.

    A slot with ``dates`` applies only on those dates and beats weekday slots on those dates, which is
    how a holiday rota overrides the weekly one.
    """

    days: frozenset[int] = frozenset(range(1, 8))
    start: time = time(0, 0)
    end: time | None = None  # None: until midnight
    dates: frozenset[date] = frozenset()

    def covers(self, local: datetime) -> bool:
        if self.dates and local.date() not in self.dates:
            return False
        if not self.dates and local.isoweekday() not in self.days:
            return False
        t = local.time().replace(tzinfo=None)
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True, slots=True)
class Organisation:
    """An agency in the directory. ``towns`` empty and ``district_wide`` true: serves every town."""

    id: str
    type: str
    name_zh: str
    name_en: str
    towns: tuple[str, ...] = ()
    district_wide: bool = False
    queues: tuple[str, ...] = ()
    public_keys: tuple[PublicKey, ...] = ()
    escalation: tuple[EscalationContact, ...] = ()
    on_duty: tuple[DutySlot, ...] = ()
    active: bool = True

    def serves(self, town: str | None) -> bool:
        return self.district_wide or (town is not None and town in self.towns)

    def on_duty_at(self, local: datetime) -> bool:
        dated = [slot for slot in self.on_duty if slot.dates]
        if any(local.date() in slot.dates for slot in dated):
            return any(slot.covers(local) for slot in dated)
        return any(slot.covers(local) for slot in self.on_duty if not slot.dates)

    def has_dated_slot(self, day: date) -> bool:
        return any(day in slot.dates for slot in self.on_duty)


@dataclass(frozen=True)
class Resolution:
    """The ranked organisations that can take a referral for an agency type, and why that order."""

    candidates: tuple[Organisation, ...]
    note: str = ""


@dataclass(frozen=True)
class Directory:
    """All organisations and towns, indexed for resolution; ``version`` hashes the canonical content."""

    towns: tuple[Town, ...]
    organisations: tuple[Organisation, ...]
    version: str = ""
    _by_id: Mapping[str, Organisation] = field(init=False, repr=False, compare=False)
    _by_type: Mapping[str, tuple[Organisation, ...]] = field(init=False, repr=False, compare=False)
    _towns: Mapping[str, Town] = field(init=False, repr=False, compare=False)
    _resolved: dict[tuple[str, str | None, str | None, str | None], Resolution] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_id = {org.id: org for org in self.organisations}
        by_type: dict[str, list[Organisation]] = {}
        for org in self.organisations:
            if org.active:
                by_type.setdefault(org.type, []).append(org)
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_by_type", {k: tuple(v) for k, v in by_type.items()})
        object.__setattr__(self, "_towns", {t.code: t for t in self.towns})
        # Resolution depends only on these keys (and the time, for on-duty): memoised, the directory
        # being immutable. Bounded by agency types x towns x schools x requested organisations.
        object.__setattr__(self, "_resolved", {})
        if not self.version:
            object.__setattr__(self, "version", directory_version(self.towns, self.organisations))

    @classmethod
    def empty(cls) -> Directory:
        return cls(towns=(), organisations=())

    def get(self, org_id: str) -> Organisation | None:
        return self._by_id.get(org_id)

    def town(self, code: str) -> Town | None:
        return self._towns.get(code)

    def of_type(self, agency: str) -> tuple[Organisation, ...]:
        return self._by_type.get(agency, ())

    def type_of(self, org_id: str) -> str | None:
        org = self._by_id.get(org_id)
        return org.type if org else None

    def resolve(
        self,
        agency: str,
        *,
        town: str | None = None,
        school: str | None = None,
        requested: str | None = None,
        at: datetime | None = None,
        on_duty: bool = False,
    ) -> Resolution:
        """Rank the organisations of ``agency`` that can serve this student.

        Order: on duty now (when asked), the organisation the sender requested, organisations named
        for the student's town, district-wide ones; ties keep directory order. Schools resolve only to
        the student's own school; street centres only to the centre of the student's town.
        """
        if on_duty:
            return self._resolve(agency, town, school, requested, at, on_duty)
        key = (agency, town, school, requested)
        hit = self._resolved.get(key)
        if hit is None:
            if len(self._resolved) > 100_000:
                self._resolved.clear()
            hit = self._resolved[key] = self._resolve(agency, town, school, requested, None, False)
        return hit

    def _resolve(
        self,
        agency: str,
        town: str | None,
        school: str | None,
        requested: str | None,
        at: datetime | None,
        on_duty: bool,
    ) -> Resolution:
        pool = self.of_type(agency)
        if agency in SCHOOL_SCOPED:
            own = self._by_id.get(school or "")
            if own is None or own.type != agency or not own.active:
                return Resolution((), f"the student's school {school!r} is not in the directory")
            return Resolution((own,))
        if agency in TOWN_SCOPED:
            if town is None:
                return Resolution((), "the student's town is unknown")
            local = [org for org in pool if town in org.towns]
            if not local:
                return Resolution((), f"no {agency} serves town {town!r}")
            return Resolution(tuple(local))
        serving = [org for org in pool if org.serves(town)]
        if not serving:
            return Resolution((), f"no {agency} in the directory serves town {town!r}")
        note = ""

        def rank(org: Organisation) -> tuple[int, int, int]:
            return (
                0 if org.id == requested else 1,
                0 if town is not None and town in org.towns else 1,
                0 if org.district_wide else 1,
            )

        ranked = sorted(serving, key=rank)  # stable: directory order breaks ties
        if on_duty:
            if at is None:
                raise ValueError("on-duty resolution needs the time")
            local_now = at.astimezone(CHINA_TZ)
            # A dated rota (a holiday) on this day replaces every weekly rota of this agency type.
            dated = any(org.has_dated_slot(local_now.date()) for org in ranked)
            duty = [
                org
                for org in ranked
                if org.on_duty
                and (not dated or org.has_dated_slot(local_now.date()))
                and org.on_duty_at(local_now)
            ]
            if duty:
                ranked = duty + [org for org in ranked if org not in duty]
            else:
                note = f"no {agency} on duty at {local_now:%Y-%m-%d %H:%M}; directory order used"
        return Resolution(tuple(ranked), note)


def _canonical_org(org: Organisation) -> dict[str, Any]:
    return {
        "id": org.id,
        "type": org.type,
        "name": [org.name_zh, org.name_en],
        "towns": list(org.towns),
        "district_wide": org.district_wide,
        "queues": list(org.queues),
        "public_keys": [[k.kid, k.use, k.alg, k.key] for k in org.public_keys],
        "escalation": [[c.role_zh, c.role_en, c.phone] for c in org.escalation],
        "on_duty": [
            [
                sorted(s.days),
                s.start.isoformat(),
                s.end.isoformat() if s.end else None,
                sorted(d.isoformat() for d in s.dates),
            ]
            for s in org.on_duty
        ],
        "active": org.active,
    }


def directory_version(towns: Iterable[Town], organisations: Iterable[Organisation]) -> str:
    """sha256 over the canonical JSON of the directory: formatting and comments do not change it."""
    content = {
        "towns": [[t.code, t.name_zh, t.name_en, t.kind] for t in towns],
        "organisations": [_canonical_org(o) for o in organisations],
    }
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def organisation_as_dict(org: Organisation) -> dict[str, Any]:
    """A JSON-ready view for the CLI and the API (the YAML field names)."""
    return {
        "id": org.id,
        "type": org.type,
        "name": {"zh": org.name_zh, "en": org.name_en},
        "towns": "all" if org.district_wide and not org.towns else list(org.towns),
        "queues": list(org.queues),
        "public_keys": [{"kid": k.kid, "use": k.use, "alg": k.alg, "key": k.key} for k in org.public_keys],
        "escalation": [
            {"role": {"zh": c.role_zh, "en": c.role_en}, "phone": c.phone} for c in org.escalation
        ],
        "on_duty": [
            {
                **({"dates": sorted(d.isoformat() for d in s.dates)} if s.dates else {}),
                **(
                    {"days": [k for k, v in WEEKDAYS.items() if v in s.days]}
                    if not s.dates and s.days != frozenset(range(1, 8))
                    else {}
                ),
                "from": s.start.strftime("%H:%M"),
                "to": s.end.strftime("%H:%M") if s.end else "24:00",
            }
            for s in org.on_duty
        ],
        "active": org.active,
    }
