"""One referral, several recipients: deciding its routes in turn on one Bundle gives exactly the views
deciding each alone gives, and those views are what the plain walk over the labelled parts gives."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.domain.consent import AGENCY_TYPES, Disclosure, Recipient, decide
from hub.domain.disclosure import ENVELOPE, Content, categorise
from hub.services.disclosure import ConsentDisclosure
from hub.services.port import PlannedRoute
from schemas.envelope import ReferralSubmitted
from schemas.policy import default_disclosure_policy
from schemas.profile import validate_referral

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "schemas" / "samples").glob("*.json"))
AT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
POLICY = default_disclosure_policy()
# (org, agency type, purpose, basis, categories): every basis, narrowed and not, sensible or not.
ROUTES = [
    ("camhs-songjiang-mhc", "camhs", "treatment", "consent", ()),
    ("camhs-songjiang-mhc", "camhs", "crisis-intervention", "emergency", ()),
    ("police-songjiang", "police", "safeguarding", "statutory", ()),
    ("street-centre-yueyang", "street-centre", "follow-up", "consent", ()),
    ("district-centre", "district-centre", "treatment", "consent", ()),
    ("district-centre", "district-centre", "follow-up", "consent", ("risk", "demographics")),
    ("school-songjiang-no2-middle", "school", "education-support", "consent", ("education",)),
    ("civil-affairs-songjiang", "civil-affairs", "follow-up", "consent", ()),
    ("district-centre", "district-centre", "oversight-statistics", "consent", ()),
]


def _event(path: Path) -> tuple[bytes, ReferralSubmitted]:
    raw = path.read_bytes()
    v = validate_referral(json.loads(raw), size=len(raw), now=AT)
    event = ReferralSubmitted(
        event_id="e",
        referral_id=v.referral_id,
        idempotency_key=v.idempotency_key,
        submitted_at=AT,
        student_pseudonym=v.student_pseudonym,
        facts=v.facts,
    )
    return orjson.dumps(v.bundle), event


def _planned(org: str, agency: str, purpose: str, basis: str, cats: tuple[str, ...]) -> PlannedRoute:
    return PlannedRoute(
        recipient_org=org,
        recipient_type=agency,
        purpose=purpose,
        legal_basis=basis,
        priority="urgent",
        rule_id="test",
        categories=cats,
    )


def _outcome(o: Any) -> tuple[Any, ...]:
    view = orjson.dumps(o.view) if o.view is not None else None
    return (o.allowed, o.reason_code, o.reason, o.basis, o.categories, o.consent_ids, o.expires_at, view)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_routes_of_one_bundle_decide_as_each_alone(path: Path) -> None:
    raw, event = _event(path)
    shared = ConsentDisclosure(POLICY)
    bundle = orjson.loads(raw)
    together = [_outcome(shared.decide(bundle, event, _planned(*r), AT)) for r in ROUTES]
    alone = [
        _outcome(ConsentDisclosure(POLICY).decide(orjson.loads(raw), event, _planned(*r), AT)) for r in ROUTES
    ]
    assert together == alone
    assert any(o[0] for o in together)
    assert orjson.loads(raw) == bundle  # deciding never alters the Bundle


_REMOVED = object()


def _reference_prune(value: Any, dropped: frozenset[str], persons: frozenset[str]) -> Any:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref in dropped:
            return _REMOVED
        strip = isinstance(ref, str) and ref in persons
        out = {}
        for k, v in value.items():
            if strip and k == "display":
                continue
            p = _reference_prune(v, dropped, persons)
            if p is not _REMOVED:
                out[k] = p
        return out or _REMOVED
    if isinstance(value, list):
        items = [p for p in (_reference_prune(v, dropped, persons) for v in value) if p is not _REMOVED]
        return items or _REMOVED
    return value


def _reference_view(c: Content, allowed: Collection[str], deny_free: bool, consents: Collection[str]) -> Any:
    """The minimised Bundle by the plain definition, straight from ``Content.parts``."""
    bare = {x.rsplit("/", 1)[-1] for x in consents}

    def visible(p: Any) -> bool:
        return p.category == ENVELOPE or (p.category in allowed and not (deny_free and p.free_text))

    kept, dropped = [], set()
    for i, mode in enumerate(c.keep):
        mine = [p for p in c.parts if p.entry == i and visible(p)]
        if (
            mode == "always"
            or (mode == "basis" and c.resource_ids[i] in bare)
            or (mode == "content" and any(p.category != ENVELOPE for p in mine))
        ):
            kept.append((i, mine))
        else:
            dropped |= c.refs[i]
    gone = frozenset(dropped)
    entries = []
    for i, mine in kept:
        entry = c.bundle["entry"][i]
        res = entry["resource"]
        out: dict[str, Any] = {"resourceType": res["resourceType"]}
        for p in mine:
            raw = res[p.element] if p.item is None else res[p.element][p.item]
            v = _reference_prune(raw, gone, c.person_refs)
            if v is _REMOVED:
                continue
            if p.item is None:
                out[p.element] = v
            else:
                out.setdefault(p.element, []).append(v)
        entries.append(
            {"fullUrl": entry["fullUrl"], "resource": out} if "fullUrl" in entry else {"resource": out}
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle"}
    for key in c.policy.bundle_elements:
        v = _reference_prune(c.bundle.get(key), gone, c.person_refs)
        if v is not None and v is not _REMOVED:
            bundle[key] = v
    bundle["entry"] = entries
    return bundle


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_views_match_the_reference_minimisation(path: Path) -> None:
    raw, event = _event(path)
    content = categorise(orjson.loads(raw), POLICY)
    disclosed = 0
    for org, agency, purpose, basis, cats in ROUTES:
        assert agency in AGENCY_TYPES
        d = decide(
            event.facts,
            content,
            recipient=Recipient(org, agency),
            purpose=purpose,
            basis=basis,
            at=AT,
            categories=cats or None,
            reason="test",
        )
        if not isinstance(d, Disclosure):
            continue
        disclosed += 1
        deid = POLICY.deidentified.get(purpose)
        expected = _reference_view(content, d.categories, bool(deid and deid.deny_free_text), d.consent_ids)
        assert orjson.dumps(d.view) == orjson.dumps(expected)
    assert disclosed
