"""The organisation directory from YAML (with file:line errors) and its SQL tables and repository."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hub.adapters.db import metadata
from hub.adapters.rules import (
    Reader,
    RuleIssue,
    RuleSetInvalid,
    YMap,
    YNode,
    YScalar,
    YSeq,
    parse_located,
    plain,
)
from hub.domain.directory import (
    AGENCY_TYPES,
    WEEKDAYS,
    Directory,
    DutySlot,
    EscalationContact,
    Organisation,
    PublicKey,
    Town,
    organisation_as_dict,
)

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
TOP_KEYS = ("description", "towns", "organisations")
TOWN_KEYS = ("code", "zh", "en", "kind")
ORG_KEYS = ("id", "type", "name", "towns", "queues", "public_keys", "escalation", "on_duty", "active")
KEY_KEYS = ("kid", "use", "alg", "key")
ESCALATION_KEYS = ("role", "phone")
DUTY_KEYS = ("days", "dates", "from", "to")


class DirectoryInvalid(RuleSetInvalid):
    def __init__(self, issues: list[RuleIssue]) -> None:
        super().__init__(issues, code="directory-invalid")


def load_directory(path: Path) -> Directory:
    """The directory in a YAML file, or ``DirectoryInvalid`` with every problem at its file:line."""
    directory, issues = check_directory(path)
    if directory is None:
        raise DirectoryInvalid(issues)
    return directory


def check_directory(path: Path) -> tuple[Directory | None, list[RuleIssue]]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [RuleIssue(str(path), 0, f"cannot read: {exc.strerror}")]
    return parse_directory(text, str(path))


def parse_directory(text: str, file: str) -> tuple[Directory | None, list[RuleIssue]]:
    root, issues = parse_located(text, file)
    if root is None:
        return None, issues or [RuleIssue(file, 1, "the file is empty")]
    r = Reader(file)
    directory = _directory(r, root)
    issues = sorted(issues + r.issues, key=lambda i: i.line)
    return (directory if not issues else None), issues


def directory_from_data(data: Mapping[str, Any], source: str = "<database>") -> Directory:
    """Rebuild from plain data (what the database stores), with the same validation as the YAML."""
    r = Reader(source)
    directory = _directory(r, _located(data))
    if directory is None or r.issues:
        raise DirectoryInvalid(r.issues)
    return directory


def _located(value: Any, line: int = 0) -> YNode:
    if isinstance(value, Mapping):
        return YMap(line, {str(k): (line, _located(v, line)) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return YSeq(line, [_located(v, line) for v in value])
    return YScalar(line, value)


def _directory(r: Reader, root: YNode) -> Directory | None:
    top = r.mapping(root, "a directory file", TOP_KEYS, ("towns", "organisations"))
    if top is None:
        return None
    towns: list[Town] = []
    seen_towns: dict[str, int] = {}
    if "towns" in top.items:
        for node in r.seq(top.items["towns"][1], "towns"):
            town = _town(r, node, seen_towns)
            if town is not None:
                towns.append(town)
    codes = [t.code for t in towns]
    orgs: list[Organisation] = []
    seen: dict[str, int] = {}
    if "organisations" in top.items:
        for node in r.seq(top.items["organisations"][1], "organisations"):
            org = _organisation(r, node, codes, seen)
            if org is not None:
                orgs.append(org)
    if r.issues:
        return None
    return Directory(towns=tuple(towns), organisations=tuple(orgs))


def _town(r: Reader, node: YNode, seen: dict[str, int]) -> Town | None:
    m = r.mapping(node, "a town", TOWN_KEYS, ("code", "zh", "en"))
    if m is None:
        return None
    code = r.text(m.items["code"][1], "code") if "code" in m.items else None
    if code is None:
        return None
    if not _ID.match(code):
        r.fail(m.items["code"][1].line, f"town code '{code}' must be lower-case letters, digits and '-'")
        return None
    if code in seen:
        r.fail(m.items["code"][1].line, f"duplicate town '{code}' (first at line {seen[code]})")
        return None
    seen[code] = m.line
    kind = "town"
    if "kind" in m.items:
        kind = r.code(m.items["kind"][1], "kind", ["street", "town"], "town-kind") or "town"
    zh = r.text(m.items["zh"][1], "zh") if "zh" in m.items else None
    en = r.text(m.items["en"][1], "en") if "en" in m.items else None
    return Town(code, zh or "", en or "", kind)


def _organisation(r: Reader, node: YNode, towns: list[str], seen: dict[str, int]) -> Organisation | None:
    m = r.mapping(node, "an organisation", ORG_KEYS, ("id", "type", "name"))
    if m is None:
        return None
    before = len(r.issues)
    org_id = r.text(m.items["id"][1], "id") if "id" in m.items else None
    if org_id is not None:
        line = m.items["id"][1].line
        if not _ID.match(org_id):
            r.fail(line, f"organisation id '{org_id}' must be lower-case letters, digits and '-'")
        elif org_id in seen:
            r.fail(line, f"duplicate organisation id '{org_id}' (first at line {seen[org_id]})")
        else:
            seen[org_id] = line
    kind = (
        r.code(m.items["type"][1], "type", sorted(AGENCY_TYPES), "agency-type") if "type" in m.items else None
    )
    name = r.bilingual(m.items["name"][1], "name") if "name" in m.items else {}
    served: tuple[str, ...] = ()
    district_wide = False
    if "towns" in m.items:
        tnode = m.items["towns"][1]
        if isinstance(tnode, YScalar) and tnode.value == "all":
            district_wide = True
        else:
            listed = []
            for item in r.seq(tnode, "towns (a list of town codes, or 'all')"):
                code = r.code(item, "towns", towns, "town")
                if code is not None:
                    listed.append(code)
            served = tuple(listed)
    elif kind not in ("school", "street-centre"):
        district_wide = True  # district agencies serve every town unless the file narrows them
    if kind in ("school", "street-centre") and not served:
        r.fail(m.line, f"a {kind} names the town(s) it is in or serves ('towns')")
    queues: tuple[str, ...] = ()
    if "queues" in m.items:
        queues = tuple(q for q in (r.text(n, "queues") for n in r.seq(m.items["queues"][1], "queues")) if q)
    keys: list[PublicKey] = []
    if "public_keys" in m.items:
        for item in r.seq(m.items["public_keys"][1], "public_keys"):
            km = r.mapping(item, "a public key", KEY_KEYS, KEY_KEYS)
            if km is not None and all(k in km.items for k in KEY_KEYS):
                use = r.code(km.items["use"][1], "use", ["sign", "seal"], "key-use")
                values = {k: str(plain(v)) for k, (_, v) in km.items.items()}
                if use is not None:
                    keys.append(PublicKey(values["kid"], use, values["alg"], values["key"]))
    contacts: list[EscalationContact] = []
    if "escalation" in m.items:
        for item in r.seq(m.items["escalation"][1], "escalation"):
            em = r.mapping(item, "an escalation contact", ESCALATION_KEYS, ESCALATION_KEYS)
            if em is not None and all(k in em.items for k in ESCALATION_KEYS):
                role = r.bilingual(em.items["role"][1], "role")
                phone = r.text(em.items["phone"][1], "phone (quote it)")
                if role and phone:
                    contacts.append(EscalationContact(role["zh"], role["en"], phone))
    duty: list[DutySlot] = []
    if "on_duty" in m.items:
        for item in r.seq(m.items["on_duty"][1], "on_duty"):
            slot = _slot(r, item)
            if slot is not None:
                duty.append(slot)
    active = True
    if "active" in m.items:
        active = bool(r.boolean(m.items["active"][1], "active"))
    if len(r.issues) > before or org_id is None or kind is None or not name:
        return None
    return Organisation(
        id=org_id,
        type=kind,
        name_zh=name["zh"],
        name_en=name["en"],
        towns=served,
        district_wide=district_wide,
        queues=queues,
        public_keys=tuple(keys),
        escalation=tuple(contacts),
        on_duty=tuple(duty),
        active=active,
    )


def _slot(r: Reader, node: YNode) -> DutySlot | None:
    m = r.mapping(node, "an on-duty slot", DUTY_KEYS)
    if m is None:
        return None
    days = frozenset(range(1, 8))
    dates: frozenset[date] = frozenset()
    if "days" in m.items:
        picked = [r.code(n, "days", list(WEEKDAYS), "weekday") for n in r.seq(m.items["days"][1], "days")]
        days = frozenset(WEEKDAYS[d] for d in picked if d)
    if "dates" in m.items:
        found = []
        for n in r.seq(m.items["dates"][1], "dates"):
            value = plain(n)
            try:
                found.append(value if isinstance(value, date) else date.fromisoformat(str(value)))
            except ValueError:
                r.fail(n.line, f"dates: '{value}' is not a date (YYYY-MM-DD)")
        dates = frozenset(found)
    start = _clock(r, m.items["from"][1], "from") if "from" in m.items else time(0, 0)
    end = _clock(r, m.items["to"][1], "to") if "to" in m.items else None
    if start is None or (end is not None and end <= start):
        if start is not None:
            r.fail(m.line, "an on-duty slot ends after it starts (split a night shift at midnight)")
        return None
    return DutySlot(days=days, start=start, end=end, dates=dates)


def _clock(r: Reader, node: YNode, what: str) -> time | None:
    value = plain(node)
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 08:00 as the base-60 number 480.
        value = f"{value // 60:02d}:{value % 60:02d}"
    text = str(value)
    if text == "24:00":
        return None
    try:
        return time.fromisoformat(text)
    except ValueError:
        r.fail(node.line, f"{what}: '{text}' is not a time of day (HH:MM)")
        return None


def directory_as_data(directory: Directory) -> dict[str, Any]:
    return {
        "towns": [
            {"code": t.code, "zh": t.name_zh, "en": t.name_en, "kind": t.kind} for t in directory.towns
        ],
        "organisations": [organisation_as_dict(o) for o in directory.organisations],
    }


# ---------------------------------------------------------------------------------------------------
# Database

directory_towns = sa.Table(
    "directory_towns",
    metadata,
    sa.Column("code", sa.String(60), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("name_zh", sa.String(100), nullable=False),
    sa.Column("name_en", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
)

directory_organisations = sa.Table(
    "directory_organisations",
    metadata,
    sa.Column("org_id", sa.String(100), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("type", sa.String(40), nullable=False, index=True),
    sa.Column("name_zh", sa.String(200), nullable=False),
    sa.Column("name_en", sa.String(200), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    # The whole entry as the YAML spells it: towns, queues, keys, escalation contacts, on-duty rota.
    sa.Column("doc", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

directory_meta = sa.Table(
    "directory_meta",
    metadata,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("value", sa.String(500), nullable=False),
)

_TABLES = [directory_towns, directory_organisations, directory_meta]


@dataclass(frozen=True)
class ImportResult:
    towns: int
    organisations: int
    version: str
    previous_version: str | None


class SqlDirectoryRepository:
    """Keeps the directory in the read-model database; an import replaces it in one transaction."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create_tables(self) -> None:
        metadata.create_all(self.engine, tables=_TABLES)

    def has_directory(self) -> bool:
        if not sa.inspect(self.engine).has_table(directory_organisations.name):
            return False
        with self.engine.connect() as conn:
            return bool(
                conn.execute(sa.select(sa.func.count()).select_from(directory_organisations)).scalar()
            )

    def replace(self, directory: Directory, source: str = "") -> ImportResult:
        self.create_tables()
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            previous = conn.execute(
                sa.select(directory_meta.c.value).where(directory_meta.c.key == "version")
            ).scalar()
            conn.execute(directory_organisations.delete())
            conn.execute(directory_towns.delete())
            conn.execute(directory_meta.delete())
            if directory.towns:
                conn.execute(
                    directory_towns.insert(),
                    [
                        {
                            "code": t.code,
                            "position": i,
                            "name_zh": t.name_zh,
                            "name_en": t.name_en,
                            "kind": t.kind,
                        }
                        for i, t in enumerate(directory.towns)
                    ],
                )
            if directory.organisations:
                conn.execute(
                    directory_organisations.insert(),
                    [
                        {
                            "org_id": o.id,
                            "position": i,
                            "type": o.type,
                            "name_zh": o.name_zh,
                            "name_en": o.name_en,
                            "active": o.active,
                            "doc": organisation_as_dict(o),
                            "updated_at": now,
                        }
                        for i, o in enumerate(directory.organisations)
                    ],
                )
            conn.execute(
                directory_meta.insert(),
                [
                    {"key": "version", "value": directory.version},
                    {"key": "source", "value": source[:500]},
                    {"key": "imported_at", "value": now.isoformat()},
                ],
            )
        return ImportResult(len(directory.towns), len(directory.organisations), directory.version, previous)

    def load(self) -> Directory | None:
        """The stored directory, or None when nothing was imported yet."""
        if not self.has_directory():
            return None
        with self.engine.connect() as conn:
            towns = (
                conn.execute(sa.select(directory_towns).order_by(directory_towns.c.position)).mappings().all()
            )
            orgs = conn.execute(
                sa.select(directory_organisations.c.doc).order_by(directory_organisations.c.position)
            ).scalars()
            data = {
                "towns": [
                    {"code": t["code"], "zh": t["name_zh"], "en": t["name_en"], "kind": t["kind"]}
                    for t in towns
                ],
                "organisations": list(orgs),
            }
        return directory_from_data(data)

    def meta(self) -> dict[str, str]:
        if not sa.inspect(self.engine).has_table(directory_meta.name):
            return {}
        with self.engine.connect() as conn:
            return {row.key: row.value for row in conn.execute(sa.select(directory_meta))}


def suggest(org_id: str, candidates: Iterable[str]) -> str:
    hint = difflib.get_close_matches(org_id, list(candidates), n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""
