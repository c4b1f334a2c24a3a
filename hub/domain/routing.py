"""Routing decisions: the rule facts, rules, routes, the decision algorithm and its explanation (pure).

Conditions arrive compiled behind the small ``Condition`` port (the CEL adapter implements it), so this
module decides and explains without knowing the expression language. Rules are indexed by their
declared ``match`` keys; the expression is only the residual test of the few candidates the index
leaves, which keeps a decision cheap however many rules a district writes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import cached_property
from typing import Any, Literal, NamedTuple, Protocol

from hub.domain.directory import AGENCY_TYPES, CHINA_TZ, Directory, Organisation
from hub.domain.error import HubError, InvalidInput
from schemas.envelope import ReferralFacts

# ---------------------------------------------------------------------------------------------------
# Vocabulary. These mirror the code systems of the FHIR profile; rules are checked against them at load.

REFERRAL_REASONS: Mapping[str, tuple[str, str]] = {
    "screening-positive": ("筛查阳性", "screening positive"),
    "suicidal-ideation": ("自杀意念", "suicidal ideation"),
    "suicide-attempt": ("自杀未遂", "suicide attempt"),
    "self-harm": ("自伤", "self-harm"),
    "crisis-call": ("热线危机来电", "hotline crisis call"),
    "suspected-abuse-neglect": ("疑似遭受虐待或忽视", "suspected abuse or neglect"),
    "bullying": ("欺凌", "bullying"),
    "family-crisis": ("家庭危机", "family crisis"),
    "school-refusal": ("拒学", "school refusal"),
    "post-discharge-return": ("出院返校", "post-discharge return to school"),
    "case-support": ("涉案心理支持", "case-related psychological support"),
    "welfare-follow-up": ("民政帮扶随访", "welfare follow-up"),
}
PURPOSES: frozenset[str] = frozenset(
    {
        "treatment",
        "crisis-intervention",
        "safeguarding",
        "education-support",
        "follow-up",
        "investigation",
        "oversight-statistics",
    }
)
LEGAL_BASES: frozenset[str] = frozenset({"consent", "statutory", "emergency"})
DATA_CATEGORIES: frozenset[str] = frozenset(
    {"identity", "contact", "demographics", "screening", "risk", "clinical", "family", "case", "education"}
)
PRIORITIES: tuple[str, ...] = ("routine", "urgent", "asap", "stat")
ROLES: frozenset[str] = frozenset({"primary", "copy"})
GENDERS: frozenset[str] = frozenset({"male", "female", "other", "unknown"})

# Local office hours for the ``office_hours`` fact (Asia/Shanghai).
OFFICE_HOURS: tuple[time, time] = (time(8, 0), time(17, 0))


@dataclass(frozen=True, slots=True)
class FactField:
    """One field of the rule facts object, as rules see it (the README documents the same table)."""

    name: str
    type: Literal["string", "int", "bool", "list<string>"]
    nullable: bool
    codes: str | None  # vocabulary the values come from, checked in rule literals
    zh: str
    en: str
    bounds: tuple[int, int] | None = None  # int fields a ``match`` range may expand over


FACT_FIELDS: tuple[FactField, ...] = (
    FactField("source_org", "string", False, "org", "转介来源机构 id", "sending organisation id"),
    FactField("source_type", "string", False, "agency-type", "来源机构类型", "sending agency type"),
    FactField("reasons", "list<string>", False, "referral-reason", "转介原因代码", "referral reason codes"),
    FactField("risk_level", "int", False, None, "风险等级 1–4", "risk level 1-4", (1, 4)),
    FactField("priority", "string", False, "priority", "紧急程度", "FHIR request priority"),
    FactField("age", "int", True, None, "年龄（周岁）", "age in years", (0, 25)),
    FactField("gender", "string", True, "gender", "性别", "gender"),
    FactField("town", "string", True, "town", "学生所在街镇代码", "student's town/street code"),
    FactField("school", "string", True, "org", "学生所在学校 id", "student's school id"),
    FactField("grade", "string", True, None, "年级", "grade"),
    FactField(
        "requested_recipient", "string", True, "org", "发送方指定的接收机构", "recipient the sender asked for"
    ),
    FactField(
        "legal_basis_claimed",
        "string",
        True,
        "legal-basis",
        "发送方声明的法律依据",
        "legal basis the sender claims",
    ),
    FactField("has_consent", "bool", False, None, "有有效的监护人同意", "an active guardian consent exists"),
    FactField(
        "student_assent", "bool", False, None, "已记录学生本人同意", "the student's own assent is recorded"
    ),
    FactField(
        "consent_recipients",
        "list<string>",
        False,
        "recipient",
        "同意覆盖的接收方（类型或机构 id）",
        "recipients the active consents cover (agency types or org ids)",
    ),
    FactField(
        "consent_purposes",
        "list<string>",
        False,
        "purpose",
        "同意覆盖的目的",
        "purposes the active consents cover",
    ),
    FactField(
        "consent_categories",
        "list<string>",
        False,
        "data-category",
        "同意覆盖的数据类别",
        "data categories the active consents cover",
    ),
    FactField("hour", "int", False, None, "当地时间小时 0–23", "local hour 0-23 (Asia/Shanghai)", (0, 23)),
    FactField("weekday", "int", False, None, "星期 1=周一 … 7=周日", "weekday 1=Monday ... 7=Sunday", (1, 7)),
    FactField(
        "working_day", "bool", False, None, "是否工作日（含调休）", "working day (public-holiday calendar)"
    ),
    FactField(
        "office_hours", "bool", False, None, "工作日 08:00–17:00", "working day between 08:00 and 17:00"
    ),
    FactField(
        "declined_by",
        "list<string>",
        False,
        "org",
        "已拒绝本转介的机构",
        "organisations that declined this referral",
    ),
    FactField(
        "declined_types",
        "list<string>",
        False,
        "agency-type",
        "已拒绝机构的类型",
        "agency types of those organisations",
    ),
    FactField("rerouted", "bool", False, None, "是否为拒绝后的再次分派", "a re-route after a decline"),
)
FACTS_BY_NAME: Mapping[str, FactField] = {f.name: f for f in FACT_FIELDS}


def vocabulary(directory: Directory) -> Mapping[str, frozenset[str]]:
    """Every code system rules may name, the directory's towns and organisation ids included."""
    orgs = frozenset(o.id for o in directory.organisations)
    return {
        "agency-type": AGENCY_TYPES,
        "referral-reason": frozenset(REFERRAL_REASONS),
        "priority": frozenset(PRIORITIES),
        "legal-basis": LEGAL_BASES,
        "purpose": PURPOSES,
        "data-category": DATA_CATEGORIES,
        "gender": GENDERS,
        "town": frozenset(t.code for t in directory.towns),
        "org": orgs,
        "recipient": AGENCY_TYPES | orgs,
    }


# ---------------------------------------------------------------------------------------------------
# Facts


@dataclass(frozen=True)
class RuleFacts:
    """What rules can test about a referral: the referral facts plus the routing context."""

    source_org: str
    source_type: str
    reasons: tuple[str, ...]
    risk_level: int
    priority: str
    now: datetime
    age: int | None = None
    gender: str | None = None
    town: str | None = None
    school: str | None = None
    grade: str | None = None
    requested_recipient: str | None = None
    legal_basis_claimed: str | None = None
    has_consent: bool = False
    student_assent: bool = False
    consent_recipients: tuple[str, ...] = ()
    consent_purposes: tuple[str, ...] = ()
    consent_categories: tuple[str, ...] = ()
    hour: int = 0
    weekday: int = 1
    working_day: bool = True
    office_hours: bool = False
    declined_by: tuple[str, ...] = ()
    declined_types: tuple[str, ...] = ()
    rerouted: bool = False

    @cached_property
    def mapping(self) -> Mapping[str, Any]:
        """The facts as rules see them (no ``now``: rules test ``hour``, ``weekday``, ``working_day``)."""
        return {f.name: getattr(self, f.name) for f in FACT_FIELDS}

    def as_dict(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in self.mapping.items()}
        out["now"] = self.now.isoformat()
        return out


def rule_facts(
    referral: ReferralFacts,
    *,
    now: datetime,
    working_day: bool,
    declined_by: Iterable[str] = (),
    directory: Directory | None = None,
) -> RuleFacts:
    """Build the rule facts of a referral at ``now`` (aware), given the calendar's working-day flag.

    Only consents active at ``now`` count. ``declined_by`` lists the organisations that declined this
    referral already; with a directory their agency types become ``declined_types``.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput("routing needs a timezone-aware time", code="naive-datetime")
    local = now.astimezone(CHINA_TZ)
    active = [
        c
        for c in referral.consents
        if c.status == "active" and (c.start is None or c.start <= now) and (c.end is None or now < c.end)
    ]
    declined = tuple(dict.fromkeys(declined_by))
    declined_types: tuple[str, ...] = ()
    recipients = _union(c.recipients for c in active)
    if directory is not None:
        declined_types = tuple(dict.fromkeys(t for d in declined if (t := directory.type_of(d)) is not None))
        # A consent naming one hospital also covers "a camhs" for routing; disclosure stays per organisation.
        recipients = _union([recipients, (t for r in recipients if (t := directory.type_of(r)) is not None)])
    start, end = OFFICE_HOURS
    local_time = local.time()
    return RuleFacts(
        source_org=referral.source_org,
        source_type=str(referral.source_type.value),
        reasons=tuple(referral.reasons),
        risk_level=int(referral.risk_level),
        priority=referral.priority,
        now=now,
        age=referral.age,
        gender=referral.gender,
        town=referral.town,
        school=referral.school,
        grade=referral.grade,
        requested_recipient=referral.requested_recipient,
        legal_basis_claimed=referral.legal_basis_claimed,
        has_consent=any(c.grantor in ("guardian", "both") for c in active),
        student_assent=any(c.student_assent or c.grantor in ("student", "both") for c in active),
        consent_recipients=recipients,
        consent_purposes=_union(c.purposes for c in active),
        consent_categories=_union(c.categories for c in active),
        hour=local.hour,
        weekday=local.isoweekday(),
        working_day=working_day,
        office_hours=working_day and start <= local_time.replace(tzinfo=None) < end,
        declined_by=declined,
        declined_types=declined_types,
        rerouted=bool(declined),
    )


def _union(lists: Iterable[Iterable[str]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(x for xs in lists for x in xs))


# ---------------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a rule or route was written: the file and line an operator should open."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class ConditionError(HubError):
    """A rule's condition could not be evaluated for these facts (e.g. ``age < 14`` with no age)."""

    def __init__(self, message: str) -> None:
        super().__init__(message=message, code="rule-condition-error", status=500)


class Condition(Protocol):
    """A compiled rule condition (the ``when:`` expression); the adapter owns the language."""

    @property
    def source(self) -> str: ...

    @property
    def fields(self) -> frozenset[str]: ...

    def evaluate(self, facts: Mapping[str, Any]) -> bool:
        """True or False, or raise ``ConditionError``."""
        ...


_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|wd)\s*$")


@dataclass(frozen=True, slots=True)
class Deadline:
    """An SLA duration. ``working_days``: ``amount`` is a whole number of working days, not clock time."""

    amount: timedelta
    working_days: bool = False

    @classmethod
    def parse(cls, text: str) -> Deadline:
        """``30m``, ``2h``, ``7d`` (clock time) or ``3wd`` (working days); ``s`` for drills and tests."""
        m = _DURATION.match(str(text))
        if not m:
            raise ValueError(f"bad duration {text!r}: use 30m, 2h, 7d or 3wd (working days)")
        n, unit = int(m.group(1)), m.group(2)
        if n <= 0:
            raise ValueError(f"bad duration {text!r}: must be positive")
        if unit == "s":
            return cls(timedelta(seconds=n))
        if unit in ("m", "min"):
            return cls(timedelta(minutes=n))
        if unit == "h":
            return cls(timedelta(hours=n))
        if unit == "d":
            return cls(timedelta(days=n))
        return cls(timedelta(days=n), working_days=True)

    def __str__(self) -> str:
        if self.working_days:
            return f"{self.amount.days}wd"
        seconds = int(self.amount.total_seconds())
        if seconds % 86400 == 0:
            return f"{seconds // 86400}d"
        if seconds % 3600 == 0:
            return f"{seconds // 3600}h"
        if seconds % 60 == 0:
            return f"{seconds // 60}m"
        return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class Sla:
    acknowledge: Deadline | None = None
    decide: Deadline | None = None
    first_contact: Deadline | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "acknowledge": str(self.acknowledge) if self.acknowledge else None,
            "decide": str(self.decide) if self.decide else None,
            "first_contact": str(self.first_contact) if self.first_contact else None,
        }


@dataclass(frozen=True, slots=True)
class RecipientSpec:
    """Who a route goes to: an agency type resolved through the directory, or a named organisation."""

    agency: str | None = None
    org: str | None = None
    on_duty: bool = False

    def __str__(self) -> str:
        if self.org:
            return self.org
        return f"{self.agency}{' (on duty)' if self.on_duty else ''}"


@dataclass(frozen=True, slots=True)
class EscalationSpec:
    """One step of an escalation chain: an agency type, an organisation or a role (e.g. duty supervisor)."""

    agency: str | None = None
    org: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class RouteAction:
    """A rule's action: a pathway of recipients (first not declined wins) and the terms of the route."""

    to: tuple[RecipientSpec, ...]
    purpose: str
    legal_basis: str
    role: str = "primary"
    priority: str = "inherit"  # inherit the referral's priority, or a FHIR priority
    sla: Sla = Sla()
    escalation: tuple[EscalationSpec, ...] = ()
    categories: tuple[str, ...] | None = None  # the most the route may carry; consent narrows it
    queue: str | None = None
    origin: Origin = Origin("<memory>", 0)

    def canonical(self) -> dict[str, Any]:
        return {
            "to": [[r.agency, r.org, r.on_duty] for r in self.to],
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "role": self.role,
            "priority": self.priority,
            "sla": self.sla.as_dict(),
            "escalation": [[e.agency, e.org, e.role] for e in self.escalation],
            "categories": list(self.categories) if self.categories is not None else None,
            "queue": self.queue,
        }


@dataclass(frozen=True)
class Match:
    """Declared match keys: fact name -> accepted values (any of them; for list facts, any element)."""

    constraints: tuple[tuple[str, frozenset[Any]], ...] = ()

    @classmethod
    def of(cls, **keys: Iterable[Any]) -> Match:
        return cls(tuple(sorted((k, frozenset(v)) for k, v in keys.items())))

    def key_names(self) -> frozenset[str]:
        return frozenset(k for k, _ in self.constraints)

    def values(self, key: str) -> frozenset[Any] | None:
        for k, v in self.constraints:
            if k == key:
                return v
        return None

    @cached_property
    def _shown(self) -> Mapping[str, str]:
        return {k: _show(v) for k, v in self.constraints}

    def why_not(self, facts: Mapping[str, Any]) -> str | None:
        """None when the facts satisfy every key, else the first key that fails, in words."""
        for key, accepted in self.constraints:
            value = facts.get(key)
            if isinstance(value, tuple):
                if accepted.isdisjoint(value):
                    return f"match.{key}: none of {_show(value)} in {self._shown[key]}"
            elif value not in accepted:
                return f"match.{key}: {_show(value)} not in {self._shown[key]}"
        return None

    def canonical(self) -> dict[str, list[Any]]:
        return {k: sorted(v, key=repr) for k, v in self.constraints}


def _show(value: Any) -> str:
    """JSON-looking text for explanations, without json.dumps on the hot path."""
    if isinstance(value, frozenset | set):
        return "[" + ", ".join(_scalar(v) for v in sorted(value, key=repr)) + "]"
    if isinstance(value, tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _scalar(value)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if '"' in value or "\\" in value else f'"{value}"'
    return str(value)


@dataclass(frozen=True)
class Rule:
    id: str
    routes: tuple[RouteAction, ...]
    priority: int = 0
    match: Match = Match()
    when: Condition | None = None
    stop: bool = False
    pathway: str | None = None
    description: Mapping[str, str] = field(default_factory=dict)
    origin: Origin = Origin("<memory>", 0)

    @cached_property
    def where(self) -> str:
        return str(self.origin)

    def canonical(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "priority": self.priority,
            "match": self.match.canonical(),
            "when": self.when.source if self.when is not None else None,
            "routes": [r.canonical() for r in self.routes],
            "stop": self.stop,
            "pathway": self.pathway,
        }


class RuleIndex:
    """Bitset index: for each match key, which rules accept a value, and which do not constrain the key.

    Bit ``i`` is the rule at position ``i`` of the evaluation order, so walking the set bits of the
    candidate mask from the lowest visits candidates in priority order.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.size = len(rules)
        self.all = (1 << self.size) - 1
        keys = sorted({k for r in rules for k in r.match.key_names()})
        free: dict[str, int] = dict.fromkeys(keys, 0)
        by_value: dict[str, dict[Any, int]] = {k: {} for k in keys}
        for i, rule in enumerate(rules):
            bit = 1 << i
            constrained = rule.match.key_names()
            for key in keys:
                if key not in constrained:
                    free[key] |= bit
            for key, accepted in rule.match.constraints:
                table = by_value[key]
                for v in accepted:
                    table[v] = table.get(v, 0) | bit
        # Most selective keys first: the mask empties sooner on a miss.
        self.keys: tuple[tuple[str, int, Mapping[Any, int]], ...] = tuple(
            sorted(((k, free[k], by_value[k]) for k in keys), key=lambda t: t[1].bit_count())
        )

    def candidates(self, facts: Mapping[str, Any]) -> int:
        mask = self.all
        for key, free, table in self.keys:
            value = facts.get(key)
            allowed = free
            if isinstance(value, tuple):
                for v in value:
                    allowed |= table.get(v, 0)
            else:
                allowed |= table.get(value, 0)
            mask &= allowed
            if not mask:
                break
        return mask


def iter_bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


@dataclass(frozen=True)
class RuleSet:
    """Rules in evaluation order (priority descending, then load order) plus the no-match fallback."""

    rules: tuple[Rule, ...]
    fallback: RouteAction
    name: str = "rules"
    version: str = field(init=False)
    index: RuleIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", ruleset_version(self.rules, self.fallback))
        object.__setattr__(self, "index", RuleIndex(self.rules))

    @classmethod
    def build(cls, rules: Iterable[Rule], fallback: RouteAction, name: str = "rules") -> RuleSet:
        ordered = sorted(rules, key=lambda r: -r.priority)  # stable: load order breaks ties
        return cls(tuple(ordered), fallback, name)

    def get(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


def ruleset_version(rules: Sequence[Rule], fallback: RouteAction) -> str:
    """sha256 over the canonical rule content in evaluation order; comments and layout do not count."""
    content = {"rules": [r.canonical() for r in rules], "fallback": fallback.canonical()}
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def find_shadowed(rules: Sequence[Rule]) -> list[tuple[Rule, Rule]]:
    """(shadowed, by) pairs: a stopping rule earlier in the order matches everything the later one can.

    Only provable cases count: the earlier rule has no condition (or the very same one) and each of its
    match keys is also constrained by the later rule to a subset of its values.
    """
    found: list[tuple[Rule, Rule]] = []
    stoppers = [(i, r) for i, r in enumerate(rules) if r.stop]
    for j, later in enumerate(rules):
        for i, earlier in stoppers:
            if i >= j:
                break
            if earlier.when is not None and (later.when is None or later.when.source != earlier.when.source):
                continue
            if all(
                (vals := later.match.values(key)) is not None and vals <= accepted
                for key, accepted in earlier.match.constraints
            ):
                found.append((later, earlier))
                break
    return found


# ---------------------------------------------------------------------------------------------------
# Decision


class Route(NamedTuple):
    """One recipient of a referral, with the terms the pipeline delivers and times it under.

    A NamedTuple, not a frozen dataclass: a decision builds several and frozen dataclasses cost a
    few microseconds each to construct.
    """

    recipient: str
    recipient_type: str
    role: str
    purpose: str
    legal_basis: str
    priority: str
    ack: Deadline | None
    decide: Deadline | None
    first_contact: Deadline | None
    escalation: tuple[str, ...]  # organisation ids, or "role:<name>" for a role at the recipient
    rule_id: str
    fallback: bool = False
    queue: str | None = None
    categories: tuple[str, ...] | None = None
    pathway_step: int = 0  # 0: first choice of the rule's pathway; more after declines or gaps
    skipped: tuple[str, ...] = ()  # organisations of the pathway passed over because they declined

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "recipient_type": self.recipient_type,
            "role": self.role,
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "priority": self.priority,
            "sla": Sla(self.ack, self.decide, self.first_contact).as_dict(),
            "escalation": list(self.escalation),
            "rule_id": self.rule_id,
            "fallback": self.fallback,
            "queue": self.queue,
            "categories": list(self.categories) if self.categories is not None else None,
            "pathway_step": self.pathway_step,
            "skipped": list(self.skipped),
        }


Outcome = Literal["matched", "not-matched", "not-evaluated", "error"]


class RuleTrace(NamedTuple):
    """Why one rule did or did not contribute routes."""

    rule_id: str
    origin: str
    outcome: Outcome
    reason: str
    recipients: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule_id,
            "at": self.origin,
            "outcome": self.outcome,
            "reason": self.reason,
            "recipients": list(self.recipients),
        }


@dataclass(frozen=True)
class RoutingDecision:
    routes: tuple[Route, ...]
    explanation: tuple[RuleTrace, ...]
    ruleset_version: str
    directory_version: str
    matched: bool
    notes: tuple[str, ...] = ()
    unexplained: int = 0  # rules the index excluded and a "candidates" explanation left out

    @property
    def fallback(self) -> bool:
        """True when the district centre's triage queue got it because no rule could place it."""
        return any(r.fallback for r in self.routes)

    @property
    def matched_rules(self) -> tuple[str, ...]:
        return tuple(t.rule_id for t in self.explanation if t.outcome == "matched")

    def as_dict(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "fallback": self.fallback,
            "ruleset_version": self.ruleset_version,
            "directory_version": self.directory_version,
            "routes": [r.as_dict() for r in self.routes],
            "explanation": [t.as_dict() for t in self.explanation],
            "notes": list(self.notes),
            "unexplained": self.unexplained,
        }


SENDER_ONLY = "sender"


class RoutingMisconfigured(HubError):
    """The fallback itself cannot be resolved: the directory lacks the district centre."""

    def __init__(self, message: str) -> None:
        super().__init__(message=message, code="routing-misconfigured", status=500)


def decide(
    facts: RuleFacts,
    ruleset: RuleSet,
    directory: Directory,
    *,
    explain: Literal["full", "candidates"] = "full",
) -> RoutingDecision:
    """Route a referral: matching rules in priority order until one says stop; no placement, fallback.

    ``explain="full"`` accounts for every rule (linear in the rule count, for people and tests);
    ``"candidates"`` only for those the index left, which keeps the hot path sub-linear.
    """
    fm = facts.mapping
    rules = ruleset.rules
    candidates = ruleset.index.candidates(fm)
    declined = frozenset(facts.declined_by)
    traces: dict[int, RuleTrace] = {}
    routes: list[Route] = []
    routed: dict[str, Route] = {}
    notes: list[str] = []
    any_matched = False
    need_fallback: list[str] = []
    stopped_by: Rule | None = None
    last = -1
    for i in iter_bits(candidates):
        last = i
        rule = rules[i]
        if rule.when is not None:
            try:
                ok = rule.when.evaluate(fm)
            except ConditionError as exc:
                traces[i] = RuleTrace(rule.id, rule.where, "error", f"when: {exc.message}")
                continue
            if not ok:
                traces[i] = RuleTrace(
                    rule.id, rule.where, "not-matched", f"when is false: {rule.when.source}"
                )
                continue
        any_matched = True
        produced: list[str] = []
        remarks: list[str] = []
        for action in rule.routes:
            route, remark = _route(action, rule.id, facts, directory, declined)
            if remark:
                remarks.append(remark)
            if route is None:
                if remark == SENDER_ONLY:
                    remarks[-1] = f"{action.to[0]} is the sender itself"
                elif action.role == "primary":
                    need_fallback.append(f"{rule.id}: {remark}")
                continue
            existing = routed.get(route.recipient)
            if existing is not None:
                if existing.role == "copy" and route.role == "primary":
                    routes[routes.index(existing)] = route
                    routed[route.recipient] = route
                    produced.append(route.recipient)
                else:
                    remarks.append(f"{route.recipient} already routed by {existing.rule_id}")
                continue
            routed[route.recipient] = route
            routes.append(route)
            produced.append(route.recipient)
        reason = "match and when hold" if rule.when is not None else "match holds"
        if remarks:
            reason += "; " + "; ".join(remarks)
        traces[i] = RuleTrace(rule.id, rule.where, "matched", reason, tuple(produced))
        if rule.stop:
            stopped_by = rule
            break
    notes.extend(need_fallback)
    if not any(r.role == "primary" for r in routes):
        why = "no rule matched" if not any_matched else "no primary recipient could be resolved"
        routes.insert(0, _fallback_route(ruleset.fallback, facts, directory))
        notes.insert(0, why)
    elif need_fallback:
        # A pathway ran out (everyone declined, or no centre for the town): the back-stop takes it too.
        fb = _fallback_route(ruleset.fallback, facts, directory)
        if fb.recipient not in routed:
            routes.append(fb)
    unexplained = 0
    if explain == "full":
        for i, rule in enumerate(rules):
            if i in traces:
                continue
            why_not = rule.match.why_not(fm)
            if why_not is None and stopped_by is not None and i > last:
                why = f"stopped by {stopped_by.id} ({stopped_by.origin})"
                traces[i] = RuleTrace(rule.id, rule.where, "not-evaluated", why)
            else:
                traces[i] = RuleTrace(rule.id, rule.where, "not-matched", why_not or "excluded by the index")
    else:
        unexplained = len(rules) - len(traces)
    return RoutingDecision(
        routes=tuple(routes),
        explanation=tuple(traces[i] for i in sorted(traces)),
        ruleset_version=ruleset.version,
        directory_version=directory.version,
        matched=any_matched,
        notes=tuple(notes),
        unexplained=unexplained,
    )


def _route(
    action: RouteAction,
    rule_id: str,
    facts: RuleFacts,
    directory: Directory,
    declined: frozenset[str],
    fallback: bool = False,
) -> tuple[Route | None, str]:
    org, step, skipped, remark = _pick(action.to, facts, directory, declined)
    if org is None:
        return None, remark
    return (
        Route(
            recipient=org.id,
            recipient_type=org.type,
            role=action.role,
            purpose=action.purpose,
            legal_basis=action.legal_basis,
            priority=facts.priority if action.priority == "inherit" else action.priority,
            ack=action.sla.acknowledge,
            decide=action.sla.decide,
            first_contact=action.sla.first_contact,
            escalation=_escalation(action.escalation, facts, directory),
            rule_id=rule_id,
            fallback=fallback,
            queue=action.queue,
            categories=action.categories,
            pathway_step=step,
            skipped=skipped,
        ),
        remark,
    )


def _pick(
    pathway: Sequence[RecipientSpec], facts: RuleFacts, directory: Directory, declined: frozenset[str]
) -> tuple[Organisation | None, int, tuple[str, ...], str]:
    """The first organisation of the pathway that exists, is active, is not the sender and has not declined.

    The remark is "sender" alone when the only candidates were the sender itself: nothing to route,
    and nothing missing either (the hotline does not refer a crisis call to itself).
    """
    step = 0
    skipped: list[str] = []
    gaps: list[str] = []
    sender_seen = False
    for spec in pathway:
        if spec.org is not None:
            org = directory.get(spec.org)
            found: tuple[Organisation, ...] = (org,) if org is not None and org.active else ()
            if not found:
                gaps.append(f"{spec.org} is not an active organisation")
        else:
            res = directory.resolve(
                spec.agency or "",
                town=facts.town,
                school=facts.school,
                requested=facts.requested_recipient,
                at=facts.now,
                on_duty=spec.on_duty,
            )
            found = res.candidates
            if res.note:
                gaps.append(res.note)
        for org in found:
            if org.id == facts.source_org:
                sender_seen = True
                continue
            if org.id in declined:
                skipped.append(org.id)
                step += 1
                continue
            return org, step, tuple(skipped), "; ".join(gaps)
    if skipped and not gaps:
        return None, step, tuple(skipped), f"every recipient of the pathway declined ({', '.join(skipped)})"
    if sender_seen and not gaps:
        return None, step, tuple(skipped), SENDER_ONLY
    return None, step, tuple(skipped), "; ".join(gaps) or "no recipient"


def _escalation(chain: Sequence[EscalationSpec], facts: RuleFacts, directory: Directory) -> tuple[str, ...]:
    out: list[str] = []
    for step in chain:
        if step.role is not None:
            out.append(f"role:{step.role}")
        elif step.org is not None:
            out.append(step.org)
        elif step.agency is not None:
            res = directory.resolve(step.agency, town=facts.town, school=facts.school, at=facts.now)
            if res.candidates:
                out.append(res.candidates[0].id)
    return tuple(dict.fromkeys(out))


def _fallback_route(action: RouteAction, facts: RuleFacts, directory: Directory) -> Route:
    # The back-stop takes the referral even if it declined before: someone must own it.
    route, remark = _route(action, "fallback", facts, directory, frozenset(), fallback=True)
    if route is None:
        raise RoutingMisconfigured(f"the fallback recipient cannot be resolved: {remark}")
    return route


def routes_to_add(decision: RoutingDecision, delivered: Iterable[str]) -> tuple[Route, ...]:
    """After a decline: the routes of the new decision that were not delivered already."""
    have = set(delivered)
    return tuple(r for r in decision.routes if r.recipient not in have)
