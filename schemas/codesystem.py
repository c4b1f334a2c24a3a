"""Our code systems and value sets, shipped as FHIR CodeSystem/ValueSet JSON in ``schemas/codesystems``.

The files are package data, read once on first use. Each code system also defines the implicit value
set of all its codes (its ``valueSet`` URL), so a profile check is ``terminology().has(url, code)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from schemas.canonical import cs_url, vs_url


@dataclass(frozen=True, slots=True)
class Concept:
    code: str
    display_zh: str
    display_en: str
    definition: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)

    def display(self, lang: str = "zh") -> str:
        return self.display_en if lang.startswith("en") else self.display_zh


@dataclass(frozen=True)
class CodeSystem:
    url: str
    name: str
    title: str
    concepts: Mapping[str, Concept]

    def __contains__(self, code: object) -> bool:
        return code in self.concepts

    def __iter__(self) -> Iterator[str]:
        return iter(self.concepts)

    def codes(self) -> frozenset[str]:
        return frozenset(self.concepts)


@dataclass(frozen=True)
class ValueSet:
    url: str
    name: str
    title: str
    # (system, code) -> concept
    members: Mapping[tuple[str, str], Concept]

    def has(self, system: str | None, code: str | None) -> bool:
        return (system or "", code or "") in self.members

    def codes(self, system: str) -> frozenset[str]:
        return frozenset(c for s, c in self.members if s == system)


def _concept(raw: Mapping[str, Any]) -> Concept:
    en = next((d.get("value", "") for d in raw.get("designation") or [] if d.get("language") == "en"), "")
    props = {
        p["code"]: str(next(v for k, v in p.items() if k.startswith("value")))
        for p in raw.get("property") or []
    }
    return Concept(
        str(raw["code"]), str(raw.get("display", "")), str(en), str(raw.get("definition", "")), props
    )


@dataclass(frozen=True)
class Terminology:
    """Every code system and value set we ship, by canonical URL."""

    code_systems: Mapping[str, CodeSystem]
    value_sets: Mapping[str, ValueSet]

    def system(self, url_or_name: str) -> CodeSystem:
        url = url_or_name if "/" in url_or_name else cs_url(url_or_name)
        return self.code_systems[url]

    def value_set(self, url_or_name: str) -> ValueSet:
        url = url_or_name if "/" in url_or_name else vs_url(url_or_name)
        return self.value_sets[url]

    def has(self, system: str | None, code: str | None) -> bool:
        cs = self.code_systems.get(system or "")
        return cs is not None and code in cs

    def display(self, system: str, code: str, lang: str = "zh") -> str | None:
        cs = self.code_systems.get(system)
        concept = cs.concepts.get(code) if cs else None
        return concept.display(lang) if concept else None


# Next to this module rather than importlib.resources: an editable install may expose ``schemas`` as a
# namespace package, which importlib.resources cannot read.
FOLDER = Path(__file__).resolve().parent / "codesystems"


@lru_cache(maxsize=1)
def terminology() -> Terminology:
    """Load all shipped code systems and value sets (cached: package data does not change)."""
    systems: dict[str, CodeSystem] = {}
    value_sets: dict[str, ValueSet] = {}
    raw_value_sets: list[dict[str, Any]] = []
    for entry in sorted(FOLDER.glob("*.json")):
        raw = json.loads(entry.read_text(encoding="utf-8"))
        if raw.get("resourceType") == "CodeSystem":
            concepts = {c.code: c for c in map(_concept, raw.get("concept") or [])}
            cs = CodeSystem(raw["url"], raw["name"], raw.get("title", ""), concepts)
            systems[cs.url] = cs
            # The implicit "all codes" value set of the code system.
            value_sets[raw["valueSet"]] = ValueSet(
                raw["valueSet"], raw["name"], cs.title, {(cs.url, c): v for c, v in concepts.items()}
            )
        elif raw.get("resourceType") == "ValueSet":
            raw_value_sets.append(raw)
    for raw in raw_value_sets:
        members: dict[tuple[str, str], Concept] = {}
        for include in raw["compose"]["include"]:
            system = include["system"]
            if "concept" in include:
                members.update({(system, c.code): c for c in map(_concept, include["concept"])})
            else:
                members.update({(system, code): c for code, c in systems[system].concepts.items()})
        value_sets[raw["url"]] = ValueSet(raw["url"], raw["name"], raw.get("title", ""), members)
    return Terminology(systems, value_sets)
