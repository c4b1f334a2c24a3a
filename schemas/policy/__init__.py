"""The disclosure policy: element→category map, statutory duties and break-glass limits, as typed data.

``disclosure.yaml`` (package data next to this module) is the one file that says which parts of a
Bundle belong to which data category. It is parsed and checked here, once; the pure domain receives
the resulting ``DisclosurePolicy`` and never reads files itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from schemas.canonical import cs_url
from schemas.codesystem import terminology

ENVELOPE = "envelope"  # the message's own structure: always disclosed, carries no student data
RESOURCE = "resource"  # "the category the resource was classified as"
CODE = "$code"  # classify: the category is the matched code itself
KEEP_MODES = frozenset({"always", "basis", "content"})
DEFAULT_POLICY_FILE = Path(__file__).resolve().parent / "disclosure.yaml"


class PolicyError(ValueError):
    """The policy file is wrong; ``problems`` lists every "where: what" found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class ElementRule:
    category: str  # a data category, ENVELOPE or RESOURCE
    free_text: bool = False


@dataclass(frozen=True, slots=True)
class Selection:
    """Items of a list element picked by one of their keys (``identifier[system=…]``)."""

    key: str
    value: str
    rule: ElementRule


@dataclass(frozen=True, slots=True)
class ClassifyRule:
    element: str
    system: str | None  # None: the element is a canonical string (QuestionnaireResponse.questionnaire)
    code: str  # "*" matches any code of ``system``
    category: str  # a data category or CODE


@dataclass(frozen=True)
class ResourcePolicy:
    keep: str  # always | basis | content
    category: str | None
    classify: tuple[ClassifyRule, ...]
    elements: Mapping[str, ElementRule]
    selections: Mapping[str, tuple[Selection, ...]]
    rest: ElementRule | None  # the "*" rule


@dataclass(frozen=True)
class StatutoryDuty:
    code: str
    title: str
    reasons: frozenset[str]  # empty: any reason
    recipients: frozenset[str]  # agency types, or "org:<id>"
    purposes: frozenset[str]
    categories: frozenset[str]


@dataclass(frozen=True)
class EmergencyPolicy:
    recipients: frozenset[str]
    purposes: frozenset[str]
    categories: frozenset[str]
    min_risk_level: int
    max_duration: timedelta
    reason_required: bool
    no_guardian_notice_reasons: frozenset[str]


@dataclass(frozen=True)
class Deidentification:
    deny_categories: frozenset[str]
    deny_free_text: bool


@dataclass(frozen=True)
class ConsentAges:
    assent_from: int = 14
    adult_from: int = 18


@dataclass(frozen=True)
class DisclosurePolicy:
    version: str
    digest: str  # sha256 of the file: recorded with every decision
    categories: frozenset[str]  # every data category of the code system
    purposes: frozenset[str]  # every purpose of the code system
    never: frozenset[str]
    bundle_elements: tuple[str, ...]
    resources: Mapping[str, ResourcePolicy]
    recipient_purposes: Mapping[str, frozenset[str]]
    deidentified: Mapping[str, Deidentification]
    statutory: Mapping[str, StatutoryDuty]
    emergency: EmergencyPolicy
    consent: ConsentAges = field(default_factory=ConsentAges)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        t = terminology()
        self.categories = t.system(cs_url("data-category")).codes()
        self.purposes = t.system(cs_url("purpose")).codes()
        self.agency_types = t.system(cs_url("agency-type")).codes()
        self.reasons = t.system(cs_url("referral-reason")).codes()

    def fail(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def mapping(self, raw: Any, where: str) -> Mapping[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.fail(where, "a mapping is required")
            return {}
        return raw

    def strings(
        self, raw: Any, where: str, allowed: frozenset[str] | None = None, what: str = "code"
    ) -> frozenset[str]:
        if raw is None:
            return frozenset()
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            self.fail(where, "a list of strings is required")
            return frozenset()
        if allowed is not None:
            for x in raw:
                if x not in allowed:
                    self.fail(where, f"unknown {what} {x!r}")
        return frozenset(raw)

    def recipients(self, raw: Any, where: str) -> frozenset[str]:
        items = self.strings(raw, where)
        for x in items:
            if x not in self.agency_types and not (x.startswith("org:") and len(x) > 4):
                self.fail(where, f"{x!r} is neither an agency type nor 'org:<id>'")
        return items

    def element_rule(self, raw: Any, where: str, allow_resource: bool) -> ElementRule | None:
        if isinstance(raw, str):
            raw = {"category": raw}
        if not isinstance(raw, Mapping) or not isinstance(raw.get("category"), str):
            self.fail(where, "a category name or {category: …, free_text: …} is required")
            return None
        cat = raw["category"]
        ok = {ENVELOPE, *self.categories} | ({RESOURCE} if allow_resource else set())
        if cat not in ok:
            self.fail(where, f"unknown category {cat!r}")
            return None
        extra = set(raw) - {"category", "free_text"}
        if extra:
            self.fail(where, f"unknown keys {sorted(extra)}")
        return ElementRule(cat, bool(raw.get("free_text", False)))

    def resource(self, name: str, raw: Any) -> ResourcePolicy:
        where = f"resources.{name}"
        raw = self.mapping(raw, where)
        extra = set(raw) - {"keep", "category", "classify", "elements"}
        if extra:
            self.fail(where, f"unknown keys {sorted(extra)}")
        keep = raw.get("keep", "content")
        if keep not in KEEP_MODES:
            self.fail(f"{where}.keep", f"one of {sorted(KEEP_MODES)} is required, got {keep!r}")
        category = raw.get("category")
        if category is not None and category not in self.categories | {ENVELOPE}:
            self.fail(f"{where}.category", f"unknown category {category!r}")
        classify: list[ClassifyRule] = []
        for k, rule in enumerate(raw.get("classify") or []):
            rw = f"{where}.classify[{k}]"
            match = self.mapping((rule or {}).get("match"), f"{rw}.match")
            cat = (rule or {}).get("category")
            if len(match) != 1:
                self.fail(f"{rw}.match", "exactly one element: 'system|code' is required")
                continue
            element, target = next(iter(match.items()))
            system, sep, code = str(target).rpartition("|")
            if cat != CODE and cat not in self.categories:
                self.fail(f"{rw}.category", f"unknown category {cat!r}")
                continue
            if cat == CODE and code != "*":
                self.fail(f"{rw}.category", "'$code' needs a wildcard match 'system|*'")
                continue
            classify.append(ClassifyRule(str(element), system if sep else None, code, str(cat)))
        has_category = category is not None or bool(classify)
        elements: dict[str, ElementRule] = {}
        selections: dict[str, list[Selection]] = {}
        rest: ElementRule | None = None
        for key, value in self.mapping(raw.get("elements"), f"{where}.elements").items():
            ew = f"{where}.elements.{key}"
            rule = self.element_rule(value, ew, allow_resource=has_category)
            if rule is None:
                continue
            if key == "*":
                rest = rule
            elif "[" in key:
                element, _, selector = key.partition("[")
                sel_key, eq, sel_value = selector.rstrip("]").partition("=")
                if not eq or not key.endswith("]") or not sel_value:
                    self.fail(ew, "selector must read name[key=value]")
                    continue
                if element in elements:
                    self.fail(ew, f"{element} is mapped both whole and by selector")
                selections.setdefault(element, []).append(Selection(sel_key, sel_value, rule))
            else:
                if key in selections:
                    self.fail(ew, f"{key} is mapped both whole and by selector")
                elements[key] = rule
        return ResourcePolicy(
            str(keep), category, tuple(classify), elements, {k: tuple(v) for k, v in selections.items()}, rest
        )

    def parse(self, raw: Any, digest: str) -> DisclosurePolicy:
        top = self.mapping(raw, "$")
        known = {
            "version",
            "never",
            "bundle",
            "resources",
            "recipient_purposes",
            "deidentified",
            "statutory",
            "emergency",
            "consent",
        }
        if set(top) - known:
            self.fail("$", f"unknown keys {sorted(set(top) - known)}")
        version = str(top.get("version") or "")
        if not version:
            self.fail("version", "a version is required")
        resources_ = {
            str(name): self.resource(str(name), spec)
            for name, spec in self.mapping(top.get("resources"), "resources").items()
        }
        recipient_purposes = {
            str(k): self.strings(v, f"recipient_purposes.{k}", self.purposes, "purpose")
            for k, v in self.mapping(top.get("recipient_purposes"), "recipient_purposes").items()
        }
        for k in recipient_purposes:
            if k not in self.agency_types:
                self.fail(f"recipient_purposes.{k}", "unknown agency type")
        deidentified: dict[str, Deidentification] = {}
        for purpose, spec in self.mapping(top.get("deidentified"), "deidentified").items():
            if purpose not in self.purposes:
                self.fail(f"deidentified.{purpose}", "unknown purpose")
            spec = self.mapping(spec, f"deidentified.{purpose}")
            deidentified[str(purpose)] = Deidentification(
                self.strings(
                    spec.get("deny_categories"),
                    f"deidentified.{purpose}.deny_categories",
                    self.categories,
                    "category",
                ),
                bool(spec.get("deny_free_text", True)),
            )
        statutory: dict[str, StatutoryDuty] = {}
        for code, spec in self.mapping(top.get("statutory"), "statutory").items():
            w = f"statutory.{code}"
            spec = self.mapping(spec, w)
            statutory[str(code)] = StatutoryDuty(
                str(code),
                str(spec.get("title") or code),
                self.strings(spec.get("reasons"), f"{w}.reasons", self.reasons, "reason"),
                self.recipients(spec.get("recipients"), f"{w}.recipients"),
                self.strings(spec.get("purposes"), f"{w}.purposes", self.purposes, "purpose"),
                self.strings(spec.get("categories"), f"{w}.categories", self.categories, "category"),
            )
            if not statutory[str(code)].recipients or not statutory[str(code)].purposes:
                self.fail(w, "recipients and purposes are required")
        em = self.mapping(top.get("emergency"), "emergency")
        try:
            max_duration = timedelta(hours=float(em.get("max_hours", 0)))
        except (TypeError, ValueError):
            self.fail("emergency.max_hours", "a number of hours is required")
            max_duration = timedelta(0)
        if max_duration <= timedelta(0):
            self.fail("emergency.max_hours", "break-glass access must be time-limited (max_hours > 0)")
        emergency = EmergencyPolicy(
            self.recipients(em.get("recipients"), "emergency.recipients"),
            self.strings(em.get("purposes"), "emergency.purposes", self.purposes, "purpose"),
            self.strings(em.get("categories"), "emergency.categories", self.categories, "category"),
            int(em.get("min_risk_level", 4)),
            max_duration,
            bool(em.get("reason_required", True)),
            self.strings(
                em.get("no_guardian_notice_reasons"),
                "emergency.no_guardian_notice_reasons",
                self.reasons,
                "reason",
            ),
        )
        ages = self.mapping(top.get("consent"), "consent")
        consent = ConsentAges(int(ages.get("assent_from", 14)), int(ages.get("adult_from", 18)))
        return DisclosurePolicy(
            version=version,
            digest=digest,
            categories=self.categories,
            purposes=self.purposes,
            never=self.strings(top.get("never"), "never"),
            bundle_elements=tuple(sorted(self.strings(top.get("bundle"), "bundle"))),
            resources=resources_,
            recipient_purposes=recipient_purposes,
            deidentified=deidentified,
            statutory=statutory,
            emergency=emergency,
            consent=consent,
        )


def parse_disclosure_policy(text: str, source: str = "disclosure.yaml") -> DisclosurePolicy:
    """Parse and check a policy document; raise ``PolicyError`` listing every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(source, [str(exc)]) from None
    parser = _Parser(source)
    policy = parser.parse(raw, "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest())
    if parser.problems:
        raise PolicyError(source, parser.problems)
    return policy


def load_disclosure_policy(path: str | Path | None = None) -> DisclosurePolicy:
    """The policy at ``path``, or the one shipped with the package."""
    if path is None:
        return default_disclosure_policy()
    p = Path(path)
    return parse_disclosure_policy(p.read_text(encoding="utf-8"), str(p))


@lru_cache(maxsize=1)
def default_disclosure_policy() -> DisclosurePolicy:
    return parse_disclosure_policy(
        DEFAULT_POLICY_FILE.read_text(encoding="utf-8"), "schemas/policy/disclosure.yaml"
    )
