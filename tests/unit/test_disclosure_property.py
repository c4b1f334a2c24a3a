"""Property: no disclosure ever contains a data category outside what its basis allows.

Referrals are generated with a marker string in every piece of content (``MK-<category>-…`` in
structured elements, ``FT-<category>-…`` in free text, ``UNKNOWN-…`` in parts the policy does not
label). The check reads the serialised minimised view, so it catches a leak however it happens.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.domain.consent import Disclosure, Recipient, decide
from hub.domain.disclosure import categorise
from schemas.envelope import AgencyType, ConsentSummary, ReferralFacts, RiskLevel
from schemas.policy import default_disclosure_policy

POLICY = default_disclosure_policy()
Q = "https://qixin.example.org/fhir"
DC = f"{Q}/CodeSystem/data-category"
CATEGORIES = sorted(POLICY.categories)
PURPOSES = sorted(POLICY.purposes)
AGENCIES = [a.value for a in AgencyType]
REASONS = [
    "screening-positive",
    "suicidal-ideation",
    "self-harm",
    "crisis-call",
    "suspected-abuse-neglect",
    "case-support",
    "welfare-follow-up",
    "post-discharge-return",
    "bullying",
]
AT = datetime(2026, 12, 1, tzinfo=UTC)
ORG = "org-under-test"
PATIENT = "urn:uuid:p"


def ref(url: str, display: str | None = None) -> dict[str, Any]:
    return {"reference": url, **({"display": display} if display else {})}


def entry(url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": url, "resource": resource}


def observation(
    n: int, category_coding: dict[str, str] | None, marker: str, code: dict[str, Any] | None = None
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"o{n}",
        "status": "final",
        "code": code or {"text": marker.replace("FT-", "MK-")},
        "subject": ref(PATIENT),
        "valueString": marker,
    }
    if category_coding:
        res["category"] = [{"coding": [category_coding]}]
    return entry(f"urn:uuid:o{n}", res)


@st.composite
def bundles(draw: st.DrawFn) -> dict[str, Any]:
    """A referral Bundle with random optional content, every piece carrying its category's marker."""
    n = draw(st.integers(0, 10_000))
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "p",
        "identifier": [{"system": f"{Q}/NamingSystem/student-pseudonym", "value": "psn:k1:ENVELOPE"}],
        "gender": "female",
        "birthDate": "2012-05",
        "extension": [{"url": f"{Q}/StructureDefinition/grade", "valueString": f"MK-demographics-{n}"}],
    }
    if draw(st.booleans()):
        patient["name"] = [{"text": f"MK-identity-name-{n}"}]
    if draw(st.booleans()):
        patient["identifier"].append(
            {"system": f"{Q}/NamingSystem/national-id", "value": f"MK-identity-id-{n}"}
        )
    if draw(st.booleans()):
        patient["telecom"] = [{"system": "phone", "value": f"MK-contact-phone-{n}"}]
        patient["address"] = [{"text": f"MK-contact-address-{n}"}]
    if draw(st.booleans()):  # things the policy does not label
        patient["maritalStatus"] = {"text": "UNKNOWN-marital"}
        patient["extension"].append({"url": "https://example.org/x", "valueString": "UNKNOWN-ext"})
        patient["identifier"].append({"system": "https://example.org/other-id", "value": "UNKNOWN-id"})
        patient["text"] = {"status": "generated", "div": "<div>UNKNOWN-narrative</div>"}
        patient["contained"] = [{"resourceType": "Basic", "id": "c", "code": {"text": "UNKNOWN-contained"}}]
    sr: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": "sr",
        "status": "active",
        "intent": "order",
        "priority": "asap",
        "subject": ref(PATIENT, f"MK-identity-display-{n}"),
        "requester": ref("urn:uuid:src"),
        "reasonCode": [
            {
                "coding": [{"system": f"{Q}/CodeSystem/referral-reason", "code": "bullying"}],
                "text": f"MK-risk-reason-{n}",
            }
        ],
        "extension": [
            {"url": f"{Q}/StructureDefinition/emergency-reason", "valueString": f"FT-risk-why-{n}"}
        ],
    }
    if draw(st.booleans()):
        sr["note"] = [{"text": f"FT-risk-note-{n}"}]
    entries = [
        entry(
            "urn:uuid:mh",
            {
                "resourceType": "MessageHeader",
                "id": "mh",
                "eventCoding": {"system": f"{Q}/CodeSystem/message-event", "code": "referral-request"},
                "source": {"endpoint": "urn:qixin:org:src"},
                "sender": ref("urn:uuid:src"),
                "focus": [ref("urn:uuid:t")],
            },
        ),
        entry(
            "urn:uuid:t",
            {
                "resourceType": "Task",
                "id": "t",
                "status": "requested",
                "intent": "order",
                "focus": ref("urn:uuid:sr"),
                "for": ref(PATIENT, f"MK-identity-for-{n}"),
                "note": [{"text": f"FT-risk-tasknote-{n}"}],
            },
        ),
        entry("urn:uuid:sr", sr),
        entry(PATIENT, patient),
        entry("urn:uuid:src", {"resourceType": "Organization", "id": "src", "name": "sender"}),
    ]
    if draw(st.booleans()):
        entries.append(
            entry(
                "urn:uuid:g",
                {
                    "resourceType": "RelatedPerson",
                    "id": "g",
                    "patient": ref(PATIENT),
                    "name": [{"text": f"MK-contact-guardian-{n}"}],
                    "telecom": [{"system": "phone", "value": f"MK-contact-gphone-{n}"}],
                },
            )
        )
    if draw(st.booleans()):
        entries.append(
            observation(
                1,
                None,
                f"MK-screening-phq-{n}",
                code={
                    "coding": [{"system": "http://loinc.org", "code": "44261-6"}],
                    "text": f"MK-screening-code-{n}",
                },
            )
        )
    for k, cat in enumerate(
        draw(
            st.lists(
                st.sampled_from(["family", "case", "education", "clinical", "risk"]), max_size=4, unique=True
            )
        )
    ):
        entries.append(observation(10 + k, {"system": DC, "code": cat}, f"FT-{cat}-obs-{n}"))
    if draw(st.booleans()):
        entries.append(
            entry(
                "urn:uuid:cond",
                {
                    "resourceType": "Condition",
                    "id": "cond",
                    "subject": ref(PATIENT),
                    "code": {"text": f"MK-clinical-dx-{n}"},
                },
            )
        )
    if draw(st.booleans()):  # unlabelled resources and labels that are not data categories
        entries.append(observation(30, None, "UNKNOWN-obs"))
        entries.append(observation(31, {"system": DC, "code": "envelope"}, "UNKNOWN-envelope-label"))
        entries.append(
            observation(32, {"system": "https://example.org/cs", "code": "family"}, "UNKNOWN-foreign")
        )
        entries.append(
            entry(
                "urn:uuid:doc",
                {
                    "resourceType": "DocumentReference",
                    "id": "doc",
                    "description": "UNKNOWN-doc",
                    "subject": ref(PATIENT),
                },
            )
        )
    entries.append(
        entry(
            "urn:uuid:consent-1",
            {
                "resourceType": "Consent",
                "id": "consent-1",
                "status": "active",
                "patient": ref(PATIENT),
                "performer": [ref("urn:uuid:g")],
                "sourceAttachment": {"title": "UNKNOWN-attachment"},
            },
        )
    )
    return {
        "resourceType": "Bundle",
        "id": "b",
        "type": "message",
        "signature": {"data": "UNKNOWN-sig"},
        "entry": entries,
    }


@st.composite
def consents(draw: st.DrawFn, agency: str, purpose: str) -> ConsentSummary:
    """A consent, usually (not always) naming the recipient and the purpose under test."""
    start = AT + timedelta(days=draw(st.integers(-60, 5)))
    recipients = draw(st.lists(st.sampled_from([*AGENCIES, ORG, "other-org"]), max_size=2))
    if draw(st.integers(0, 9)) < 8:
        recipients.append(draw(st.sampled_from([agency, ORG])))
    purposes = draw(st.lists(st.sampled_from(PURPOSES), max_size=2, unique=True))
    if draw(st.integers(0, 9)) < 8:
        purposes.append(purpose)
    return ConsentSummary(
        consent_id=draw(st.sampled_from(["consent-1", "consent-2", "consent-3"])),
        status=draw(st.sampled_from(["active", "active", "active", "inactive", "proposed"])),
        grantor=draw(st.sampled_from(["guardian", "student", "both", "both"])),
        recipients=recipients,
        categories=draw(st.lists(st.sampled_from(CATEGORIES), max_size=7, unique=True)),
        purposes=purposes,
        start=draw(st.none() | st.just(start)),
        end=draw(st.none() | st.just(start + timedelta(days=draw(st.integers(1, 120))))),
        student_assent=draw(st.booleans()),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str | None, str, str, list[ConsentSummary], list[str]]:
    """basis, agency, purpose, consents, reasons — biased towards cases a basis can actually cover."""
    basis = draw(st.sampled_from(["consent"] * 4 + ["statutory"] * 2 + ["emergency"] * 2 + [None, "bogus"]))
    agency = draw(st.sampled_from(AGENCIES))
    purpose = draw(st.sampled_from(PURPOSES))
    reasons = draw(st.lists(st.sampled_from(REASONS), min_size=1, max_size=3, unique=True))
    if basis == "statutory" and draw(st.integers(0, 9)) < 7:
        duty = draw(st.sampled_from(sorted(POLICY.statutory.values(), key=lambda d: d.code)))
        agency = draw(st.sampled_from(sorted(a for a in duty.recipients if a in AGENCIES)))
        purpose = draw(st.sampled_from(sorted(duty.purposes)))
        reasons = sorted(set(reasons) | set(list(duty.reasons)[:1]))
    if basis == "emergency" and draw(st.integers(0, 9)) < 7:
        agency = draw(st.sampled_from(sorted(a for a in POLICY.emergency.recipients if a in AGENCIES)))
        purpose = draw(st.sampled_from(sorted(POLICY.emergency.purposes)))
    cs = draw(st.lists(consents(agency, purpose), min_size=int(basis == "consent"), max_size=3))
    return basis, agency, purpose, cs, reasons


def consent_allows(c: ConsentSummary, facts: ReferralFacts, recipient: Recipient, purpose: str) -> set[str]:
    """An independent reading of the consent rules (DESIGN §3, §6)."""
    if recipient.org_id not in c.recipients and recipient.agency_type not in c.recipients:
        return set()
    if purpose not in c.purposes or c.status != "active":
        return set()
    if (c.start and c.start > AT) or (c.end and c.end <= AT):
        return set()
    age = facts.age if facts.age is not None else 0
    if age >= 18:
        ok = c.grantor in ("student", "both")
    elif age >= 14:
        ok = c.grantor in ("guardian", "both") and (c.student_assent or c.grantor == "both")
    else:
        ok = c.grantor in ("guardian", "both")
    return set(c.categories) if ok else set()


def basis_allows(d: Disclosure, facts: ReferralFacts, all_consents: list[ConsentSummary]) -> set[str]:
    if d.basis == "consent":
        allowed: set[str] = set()
        for c in all_consents:
            allowed |= consent_allows(c, facts, d.recipient, d.purpose)
    elif d.basis == "statutory":
        allowed = set()
        for duty in POLICY.statutory.values():
            named = (
                d.recipient.agency_type in duty.recipients or f"org:{d.recipient.org_id}" in duty.recipients
            )
            applies = not duty.reasons or bool(duty.reasons & set(facts.reasons))
            if named and applies and d.purpose in duty.purposes:
                allowed |= duty.categories
    elif d.basis == "emergency":
        allowed = (
            set(POLICY.emergency.categories)
            if int(facts.risk_level) >= POLICY.emergency.min_risk_level
            else set()
        )
    else:
        allowed = set()
    if d.purpose == "oversight-statistics":
        allowed -= {"identity", "contact"}
    return allowed


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bundle=bundles(),
    scenario=scenarios(),
    age=st.none() | st.integers(6, 19),
    risk=st.sampled_from(list(RiskLevel)),
    asked=st.none() | st.lists(st.sampled_from(CATEGORIES), max_size=5, unique=True),
    reason=st.none() | st.just("stated reason"),
)
def test_no_disclosure_exceeds_its_basis(
    bundle: dict[str, Any],
    scenario: tuple[str | None, str, str, list[ConsentSummary], list[str]],
    age: int | None,
    risk: RiskLevel,
    asked: list[str] | None,
    reason: str | None,
) -> None:
    basis, agency, purpose, cs, reasons = scenario
    facts = ReferralFacts(
        source_org="src",
        source_type=AgencyType.SCHOOL,
        reasons=reasons,
        risk_level=risk,
        priority="asap",
        age=age,
        consents=cs,
    )
    recipient = Recipient(ORG, agency)
    decision = decide(
        facts,
        categorise(bundle, POLICY),
        recipient=recipient,
        purpose=purpose,
        basis=basis,
        at=AT,
        categories=asked,
        reason=reason,
    )
    if not isinstance(decision, Disclosure):
        return
    text = json.dumps(decision.view, ensure_ascii=False)
    allowed = basis_allows(decision, facts, cs)
    if asked is not None:
        allowed &= set(asked)
    assert decision.categories <= allowed
    assert "UNKNOWN-" not in text
    for category in CATEGORIES:
        if category not in decision.categories:
            assert f"MK-{category}-" not in text, (category, decision.basis)
            assert f"FT-{category}-" not in text, (category, decision.basis)
    if decision.deidentified:
        assert "FT-" not in text
    # Whatever the decision says it disclosed is really there, and nothing else is.
    present = {c for c in CATEGORIES if f"MK-{c}-" in text or f"FT-{c}-" in text}
    assert present <= decision.disclosed <= decision.categories


@settings(max_examples=100, deadline=None)
@given(bundle=bundles(), scenario=scenarios())
def test_without_a_basis_nothing_is_disclosed(
    bundle: dict[str, Any], scenario: tuple[str | None, str, str, list[ConsentSummary], list[str]]
) -> None:
    _, agency, purpose, cs, _ = scenario
    facts = ReferralFacts(
        source_org="src",
        source_type=AgencyType.SCHOOL,
        reasons=["bullying"],
        risk_level=RiskLevel.CRISIS,
        priority="stat",
        age=15,
        consents=cs,
    )
    decision = decide(
        facts,
        categorise(bundle, POLICY),
        recipient=Recipient(ORG, agency),
        purpose=purpose,
        basis=None,
        at=AT,
    )
    assert not isinstance(decision, Disclosure)
