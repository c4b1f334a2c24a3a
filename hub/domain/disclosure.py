"""Categorised content and minimisation: which parts of a Bundle belong to which data category, and
the reduced Bundle a recipient may see.

The element→category map is data (``schemas/policy/disclosure.yaml``, passed in as a
``DisclosurePolicy``). Minimisation is default-deny: anything the policy does not label — a resource
type, an element, an identifier system, an extension url, narrative, contained resources — never
reaches a view, whatever the basis.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from schemas.canonical import SD_EMERGENCY_REASON
from schemas.policy import CODE, ENVELOPE, RESOURCE, ClassifyRule, DisclosurePolicy, ResourcePolicy

NEVER = "never"  # keep mode of resources the policy does not know
PERSON_RESOURCES = frozenset({"Patient", "RelatedPerson"})


class Part(NamedTuple):
    """One labelled piece of a resource: a whole element, or one item of a list element.

    A NamedTuple, not a frozen dataclass: categorise builds dozens per Bundle and a frozen
    dataclass's ``__init__`` costs several times a tuple's.
    """

    entry: int
    element: str
    item: int | None
    category: str  # a data category or ENVELOPE
    free_text: bool = False


@dataclass(frozen=True)
class Content:
    """A Bundle with every disclosable part labelled; unlabelled parts are not disclosable at all."""

    bundle: Mapping[str, Any]
    policy: DisclosurePolicy
    parts: tuple[Part, ...]
    keep: tuple[str, ...]  # per entry: always | basis | content | never
    resource_ids: tuple[str, ...]  # per entry
    refs: tuple[frozenset[str], ...]  # per entry: the reference strings that point at it
    person_refs: frozenset[str]  # references to the student or the guardian
    categories: frozenset[str]  # data categories present in the Bundle
    emergency_reason: str | None = None

    @cached_property
    def by_entry(self) -> tuple[tuple[tuple[Part, Any], ...], ...]:
        """Per entry, its parts in order with their raw values: minimise runs once per recipient."""
        grouped: list[list[tuple[Part, Any]]] = [[] for _ in self.keep]
        entries = self.bundle.get("entry") or []
        for part in self.parts:
            value = entries[part.entry]["resource"][part.element]
            grouped[part.entry].append((part, value if part.item is None else value[part.item]))
        return tuple(tuple(g) for g in grouped)

    def categories_of(self, entry: int) -> frozenset[str]:
        return frozenset(p.category for p in self.parts if p.entry == entry and p.category != ENVELOPE)


@dataclass(frozen=True)
class View:
    """A minimised FHIR Bundle and the data categories it actually contains."""

    bundle: dict[str, Any]
    categories: frozenset[str]


def _dict(x: Any) -> dict[str, Any]:
    return x if type(x) is dict else {}


def _list(x: Any) -> list[Any]:
    return x if type(x) is list else []


def _str(x: Any) -> str:
    return x if type(x) is str else ""


def _concepts(value: Any) -> list[Mapping[str, Any]]:
    """A CodeableConcept, a list of them, or a Coding list, as CodeableConcept-like dicts."""
    if type(value) is dict:
        return [value]
    if type(value) is list:
        return [v for v in value if type(v) is dict]
    return []


def _classify(res: Mapping[str, Any], rp: ResourcePolicy, categories: Collection[str]) -> str | None:
    for rule in rp.classify:
        cat = _match(res.get(rule.element), rule, categories)
        if cat is not None:
            return cat
    return rp.category


def _match(value: Any, rule: ClassifyRule, categories: Collection[str]) -> str | None:
    if rule.system is None:  # a canonical, compared without its |version
        if type(value) is str and value.split("|", 1)[0] == rule.code:
            return rule.category
        return None
    for concept in _concepts(value):
        codings = concept.get("coding") if "coding" in concept else [concept]
        for coding in codings if type(codings) is list else []:
            if type(coding) is not dict or coding.get("system") != rule.system:
                continue
            code = coding.get("code")
            if rule.code not in ("*", code):
                continue
            cat = code if rule.category == CODE else rule.category
            # A code that is not a data category (or is "envelope") must never label content.
            if type(cat) is str and cat in categories:
                return cat
    return None


def categorise(bundle: Mapping[str, Any], policy: DisclosurePolicy) -> Content:
    """Label every part of a validated Bundle with its data category, per the policy."""
    parts: list[Part] = []
    keep: list[str] = []
    ids: list[str] = []
    refs: list[frozenset[str]] = []
    person_refs: set[str] = set()
    present: set[str] = set()
    emergency_reason: str | None = None
    for i, raw_entry in enumerate(_list(bundle.get("entry"))):
        entry = _dict(raw_entry)
        res = _dict(entry.get("resource"))
        rtype = res.get("resourceType")
        rid = _str(res.get("id"))
        names = {n for n in (entry.get("fullUrl"), f"{rtype}/{rid}" if rid else None) if type(n) is str}
        refs.append(frozenset(names))
        ids.append(rid)
        if rtype in PERSON_RESOURCES:
            person_refs |= names
        rp = policy.resources.get(rtype) if type(rtype) is str else None
        if rp is None:
            keep.append(NEVER)
            continue
        keep.append(rp.keep)
        rcat = _classify(res, rp, policy.categories)
        if rtype == "ServiceRequest":
            for ext in _list(res.get("extension")):
                if (
                    type(ext) is dict
                    and ext.get("url") == SD_EMERGENCY_REASON
                    and type(ext.get("valueString")) is str
                ):
                    emergency_reason = ext["valueString"]
        for key, value in res.items():
            if key == "resourceType" or key in policy.never:
                continue
            selections = rp.selections.get(key)
            if selections is not None:
                for idx, item in enumerate(value if type(value) is list else []):
                    if type(item) is not dict:
                        continue
                    rule = next((s.rule for s in selections if item.get(s.key) == s.value), None)
                    cat = None if rule is None else (rcat if rule.category == RESOURCE else rule.category)
                    if rule is not None and cat is not None:
                        parts.append(Part(i, key, idx, cat, rule.free_text))
                        present.add(cat)
                continue
            rule = rp.elements.get(key) or rp.rest
            if rule is None:
                continue
            cat = rcat if rule.category == RESOURCE else rule.category
            if cat is None:
                continue
            parts.append(Part(i, key, None, cat, rule.free_text))
            present.add(cat)
    present.discard(ENVELOPE)
    return Content(
        bundle,
        policy,
        tuple(parts),
        tuple(keep),
        tuple(ids),
        tuple(refs),
        frozenset(person_refs),
        frozenset(present),
        emergency_reason,
    )


class _Removed:
    pass


_REMOVED = _Removed()


def _prune(value: Any, dropped: frozenset[str], persons: frozenset[str]) -> Any:
    """Copy ``value`` without references to dropped resources (and without display text naming a person).

    Empty objects and lists left behind go too (``_REMOVED``). Scalars are copied inline by the
    dict and list walkers rather than through a call each: most of a Bundle's leaves are scalars.
    """
    kind = type(value)
    if kind is dict:
        return _prune_dict(value, dropped, persons)
    if kind is list:
        return _prune_list(value, dropped, persons)
    return value


_CONTAINERS = (dict, list)  # scalars are copied as they are, without a call each


def _prune_dict(value: dict[str, Any], dropped: frozenset[str], persons: frozenset[str]) -> Any:
    ref = value.get("reference")
    strip_display = False
    if type(ref) is str:
        if ref in dropped:
            return _REMOVED
        strip_display = ref in persons
    out: dict[str, Any] = {}
    for key, item in value.items():
        if strip_display and key == "display":
            continue
        if type(item) in _CONTAINERS:
            item = _prune(item, dropped, persons)
            if item is _REMOVED:
                continue
        out[key] = item
    return out or _REMOVED


def _prune_list(value: list[Any], dropped: frozenset[str], persons: frozenset[str]) -> Any:
    items: list[Any] = []
    for item in value:
        if type(item) in _CONTAINERS:
            item = _prune(item, dropped, persons)
            if item is _REMOVED:
                continue
        items.append(item)
    return items or _REMOVED


def minimise(
    content: Content,
    allowed: Collection[str],
    *,
    deny_free_text: bool = False,
    consent_ids: Collection[str] = (),
) -> View:
    """The Bundle reduced to envelope parts plus parts whose category is in ``allowed``.

    Resources kept: those the policy always keeps (header, task, request, patient, organisations),
    the consents in ``consent_ids`` (the basis of this disclosure), and any other resource that still
    has permitted content. References to resources left out are removed, so the view resolves.
    """
    allowed_set = frozenset(allowed)
    # Consent ids are qualified by the student ("<pseudonym>/<Consent.id>"); the Bundle holds the bare id.
    consent_set = frozenset(c.rsplit("/", 1)[-1] for c in consent_ids)
    persons = content.person_refs
    # Per entry, the parts this recipient may see, in the Bundle's order, with their raw values.
    selected: list[list[tuple[Part, Any]]] = []
    kept: list[int] = []
    dropped: set[str] = set()
    for i, (mode, labelled) in enumerate(zip(content.keep, content.by_entry, strict=True)):
        parts = [
            pv
            for pv in labelled
            if (cat := pv[0].category) == ENVELOPE
            or (cat in allowed_set and not (deny_free_text and pv[0].free_text))
        ]
        selected.append(parts)
        if (
            mode == "always"
            or (mode == "basis" and content.resource_ids[i] in consent_set)
            or (mode == "content" and any(pv[0].category != ENVELOPE for pv in parts))
        ):
            kept.append(i)
        else:
            dropped |= content.refs[i]
    dropped_refs = frozenset(dropped)
    entries = content.bundle.get("entry") or []
    present: set[str] = set()
    out_entries: list[dict[str, Any]] = []
    for i in kept:
        entry = entries[i]
        out: dict[str, Any] = {"resourceType": entry["resource"]["resourceType"]}
        for part, raw in selected[i]:
            value = _prune(raw, dropped_refs, persons)
            if value is _REMOVED:
                continue
            if part.item is None:
                out[part.element] = value
            else:
                out.setdefault(part.element, []).append(value)
            if part.category != ENVELOPE:
                present.add(part.category)
        if type(entry.get("fullUrl")) is str:
            out_entries.append({"fullUrl": entry["fullUrl"], "resource": out})
        else:
            out_entries.append({"resource": out})
    bundle: dict[str, Any] = {"resourceType": "Bundle"}
    for key in content.policy.bundle_elements:
        value = _prune(content.bundle.get(key), dropped_refs, content.person_refs)
        if value is not None and value is not _REMOVED:
            bundle[key] = value
    bundle["entry"] = out_entries
    return View(bundle, frozenset(present))
