"""PHQ-9 and GAD-7 scoring (DESIGN §6): totals, bands, item 9 and the default risk-level suggestion.

Pure functions over plain values, plus readers for the two FHIR shapes a scale result arrives in
(an Observation with item components, or a QuestionnaireResponse). Readers report problems with paths
relative to the resource, so the profile can prefix them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

LOINC = "http://loinc.org"
ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
# LOINC answer list LL358-3 (PHQ-9 and GAD-7 share it): "Not at all" .. "Nearly every day".
ANSWER_SCORES: Mapping[str, int] = {"LA6568-5": 0, "LA6569-3": 1, "LA6570-1": 2, "LA6571-9": 3}


class Scale(StrEnum):
    PHQ9 = "phq-9"
    GAD7 = "gad-7"


@dataclass(frozen=True, slots=True)
class Band:
    code: str
    low: int
    high: int
    display_zh: str
    display_en: str


@dataclass(frozen=True)
class ScaleSpec:
    scale: Scale
    panel: str  # LOINC panel code (also the questionnaire's code)
    total: str  # LOINC total-score code
    items: tuple[str, ...]  # LOINC item codes, in the order of the form
    bands: tuple[Band, ...]
    item_max: int = 3

    @property
    def total_max(self) -> int:
        return self.item_max * len(self.items)

    def band(self, total: int) -> Band:
        for b in self.bands:
            if b.low <= total <= b.high:
                return b
        raise ValueError(f"{self.scale} total {total} outside 0-{self.total_max}")


PHQ9 = ScaleSpec(
    Scale.PHQ9,
    panel="44249-1",
    total="44261-6",
    items=("44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8"),
    bands=(
        Band("minimal", 0, 4, "无或极轻微", "Minimal"),
        Band("mild", 5, 9, "轻度", "Mild"),
        Band("moderate", 10, 14, "中度", "Moderate"),
        Band("moderately-severe", 15, 19, "中重度", "Moderately severe"),
        Band("severe", 20, 27, "重度", "Severe"),
    ),
)
GAD7 = ScaleSpec(
    Scale.GAD7,
    panel="69737-5",
    total="70274-6",
    items=("69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7"),
    bands=(
        Band("minimal", 0, 4, "无或极轻微", "Minimal"),
        Band("mild", 5, 9, "轻度", "Mild"),
        Band("moderate", 10, 14, "中度", "Moderate"),
        Band("severe", 15, 21, "重度", "Severe"),
    ),
)
SPECS: Mapping[Scale, ScaleSpec] = {PHQ9.scale: PHQ9, GAD7.scale: GAD7}
PHQ9_ITEM9 = PHQ9.items[8]
# Any of these LOINC codes on an Observation.code marks a scale result.
SPEC_BY_CODE: Mapping[str, ScaleSpec] = {
    **{s.panel: s for s in SPECS.values()},
    **{s.total: s for s in SPECS.values()},
}


@dataclass(frozen=True)
class ScaleResult:
    """A scored scale. ``total`` is the item sum when every item is given, else the stated total."""

    scale: Scale
    items: Mapping[str, int] = field(default_factory=dict)
    stated_total: int | None = None

    @property
    def spec(self) -> ScaleSpec:
        return SPECS[self.scale]

    @property
    def complete(self) -> bool:
        return all(code in self.items for code in self.spec.items)

    @property
    def total(self) -> int | None:
        if self.complete:
            return sum(self.items[c] for c in self.spec.items)
        return self.stated_total

    @property
    def total_mismatch(self) -> bool:
        """A stated total that disagrees with the complete set of items."""
        return self.complete and self.stated_total is not None and self.stated_total != self.total

    @property
    def band(self) -> Band | None:
        total = self.total
        return self.spec.band(total) if total is not None and 0 <= total <= self.spec.total_max else None

    @property
    def item9(self) -> int | None:
        return self.items.get(PHQ9_ITEM9) if self.scale is Scale.PHQ9 else None

    @property
    def safety_assessment_due(self) -> bool:
        """PHQ-9 item 9 above 0 always calls for a same-day safety assessment."""
        return (self.item9 or 0) > 0

    def as_dict(self) -> dict[str, Any]:
        band = self.band
        return {
            "scale": self.scale.value,
            "total": self.total,
            "band": band.code if band else None,
            "complete": self.complete,
            "item9": self.item9,
            "safety_assessment_due": self.safety_assessment_due,
        }


def score(
    scale: Scale | str, items: Mapping[str, int] | Iterable[int], stated_total: int | None = None
) -> ScaleResult:
    """Score a scale from item values, given by LOINC code or as a sequence in form order."""
    spec = SPECS[Scale(scale)]
    by_code = dict(items) if isinstance(items, Mapping) else dict(zip(spec.items, items, strict=False))
    return ScaleResult(spec.scale, by_code, stated_total)


@dataclass(frozen=True)
class RiskMapping:
    """The default scale → risk-level mapping for the demo (DESIGN §6); psychologists set the real one."""

    crisis_item9: int = 2
    crisis_reasons: frozenset[str] = frozenset({"crisis-call"})
    high_phq9: int = 20
    high_item9: int = 1
    high_reasons: frozenset[str] = frozenset({"self-harm", "suicide-attempt"})
    elevated_phq9: int = 15
    elevated_gad7: int = 15
    attention_phq9: int = 10
    attention_gad7: int = 10


DEFAULT_RISK_MAPPING = RiskMapping()


def suggest_risk(
    results: Iterable[ScaleResult], reasons: Collection[str] = (), mapping: RiskMapping = DEFAULT_RISK_MAPPING
) -> int | None:
    """The risk level (1-4) the scores and reasons suggest, or None when nothing reaches level 1."""
    phq9 = gad7 = item9 = None
    for r in results:
        if r.scale is Scale.PHQ9:
            phq9 = max(phq9 or 0, r.total or 0) if r.total is not None else phq9
            item9 = max(item9 or 0, r.item9) if r.item9 is not None else item9
        elif r.total is not None:
            gad7 = max(gad7 or 0, r.total)
    reason_set = set(reasons)
    if (item9 is not None and item9 >= mapping.crisis_item9) or reason_set & mapping.crisis_reasons:
        return 4
    if (
        (phq9 is not None and phq9 >= mapping.high_phq9)
        or (item9 is not None and item9 >= mapping.high_item9)
        or reason_set & mapping.high_reasons
    ):
        return 3
    if (phq9 is not None and phq9 >= mapping.elevated_phq9) or (
        gad7 is not None and gad7 >= mapping.elevated_gad7
    ):
        return 2
    if (phq9 is not None and phq9 >= mapping.attention_phq9) or (
        gad7 is not None and gad7 >= mapping.attention_gad7
    ):
        return 1
    return None


# --- FHIR readers -------------------------------------------------------------------------------------

Problem = tuple[str, str, str]  # (path relative to the resource, rule, message)


def _codes(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, Mapping):
        return []
    return [
        (str(c.get("system") or ""), str(c.get("code") or ""))
        for c in concept.get("coding") or []
        if isinstance(c, Mapping)
    ]


def scale_of_observation(obs: Mapping[str, Any]) -> ScaleSpec | None:
    for system, code in _codes(obs.get("code")):
        if system == LOINC and code in SPEC_BY_CODE:
            return SPEC_BY_CODE[code]
    return None


def _whole(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    return int(v) if isinstance(v, float) and v.is_integer() else None


def _answer(value_holder: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """(score, value key) of an Observation/component value or a QuestionnaireResponse answer."""
    for key in ("valueInteger", "valueDecimal"):
        if key in value_holder:
            return _whole(value_holder[key]), key
    if "valueQuantity" in value_holder:
        return _whole(_map(value_holder["valueQuantity"]).get("value")), "valueQuantity"
    for key in ("valueCoding", "valueCodeableConcept"):
        if key in value_holder:
            raw = _map(value_holder[key])
            codings = [raw] if key == "valueCoding" else list(raw.get("coding") or [])
            for coding in map(_map, codings):
                for ext in map(_map, coding.get("extension") or []):
                    if ext.get("url") == ORDINAL_VALUE and _whole(ext.get("valueDecimal")) is not None:
                        return _whole(ext["valueDecimal"]), key
                if coding.get("system") == LOINC and coding.get("code") in ANSWER_SCORES:
                    return ANSWER_SCORES[coding["code"]], key
            return None, key
    return None, None


def _map(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _collect(
    spec: ScaleSpec, code: str, value: int | None, path: str, items: dict[str, int], problems: list[Problem]
) -> int | None:
    """Check one scored value; return the stated total when ``code`` is the total."""
    limit = spec.total_max if code in (spec.total, spec.panel) else spec.item_max
    if value is None:
        problems.append((path, "score-value", f"{spec.scale} {code}: a whole-number score is required"))
        return None
    if not 0 <= value <= limit:
        problems.append((path, "score-range", f"{spec.scale} {code}: {value} is outside 0-{limit}"))
        return None
    if code in (spec.total, spec.panel):
        return value
    if code in items:
        problems.append((path, "score-duplicate", f"{spec.scale} item {code} is given twice"))
    items[code] = value
    return None


def _finish(
    spec: ScaleSpec, items: dict[str, int], stated: int | None, base: str, problems: list[Problem]
) -> ScaleResult:
    result = ScaleResult(spec.scale, items, stated)
    if problems:
        return result  # a bad value already explains why the total cannot be checked
    if result.total_mismatch:
        problems.append(
            (
                base,
                "score-total",
                f"{spec.scale} stated total {stated} differs from the item sum {result.total}",
            )
        )
    elif stated is None and not result.complete:
        problems.append((base, "score-total", f"{spec.scale}: give the total or all {len(spec.items)} items"))
    elif not result.complete and stated is not None:
        partial = sum(items.values())
        if partial > stated:
            problems.append(
                (
                    base,
                    "score-total",
                    f"{spec.scale} stated total {stated} is below the sum of the given items {partial}",
                )
            )
    return result


def read_observation(obs: Mapping[str, Any], spec: ScaleSpec) -> tuple[ScaleResult, list[Problem]]:
    """Read a scale Observation: value[x] is the total, components carry items (by LOINC code)."""
    problems: list[Problem] = []
    items: dict[str, int] = {}
    stated: int | None = None
    value, key = _answer(obs)
    if key is not None:
        stated = _collect(spec, spec.total, value, key, items, problems)
    for k, comp in enumerate(map(_map, obs.get("component") or [])):
        codes = [c for s, c in _codes(comp.get("code")) if s == LOINC]
        code = next((c for c in codes if c in spec.items or c == spec.total), None)
        path = f"component[{k}]"
        if code is None:
            problems.append((f"{path}.code", "code-unknown", f"not a {spec.scale} item code (LOINC)"))
            continue
        value, key = _answer(comp)
        got = _collect(spec, code, value, f"{path}.{key}" if key else path, items, problems)
        if got is not None:
            if stated is not None and got != stated:
                problems.append(
                    (path, "score-total", f"{spec.scale} total given twice with different values")
                )
            stated = got
    return _finish(spec, items, stated, "", problems), problems


def scale_of_questionnaire(canonical: str | None) -> ScaleSpec | None:
    """PHQ-9 or GAD-7 from a questionnaire canonical such as ``http://loinc.org/q/44249-1|2.72``."""
    if not canonical:
        return None
    tail = canonical.split("|", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return next((s for s in SPECS.values() if s.panel == tail), None)


def _qr_items(items: Iterable[Any], path: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for k, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        here = f"{path}[{k}]"
        yield here, item
        yield from _qr_items(item.get("item") or [], f"{here}.item")


def read_questionnaire_response(qr: Mapping[str, Any], spec: ScaleSpec) -> tuple[ScaleResult, list[Problem]]:
    """Read a QuestionnaireResponse whose item linkIds are the LOINC item (and total) codes."""
    problems: list[Problem] = []
    items: dict[str, int] = {}
    stated: int | None = None
    for path, item in _qr_items(qr.get("item") or [], "item"):
        link = str(item.get("linkId") or "")
        if link not in spec.items and link != spec.total:
            continue  # groups and display items
        answers = item.get("answer") or []
        if len(answers) != 1:
            problems.append((f"{path}.answer", "cardinality", f"{spec.scale} {link}: exactly one answer"))
            continue
        value, key = _answer(_map(answers[0]))
        got = _collect(spec, link, value, f"{path}.answer[0]" + (f".{key}" if key else ""), items, problems)
        if got is not None:
            stated = got
    return _finish(spec, items, stated, "", problems), problems
