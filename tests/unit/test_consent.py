"""Disclosure decisions, table-driven over legal basis × agency type, checked on the minimised view itself."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from hub.domain.consent import Disclosure, Recipient, Refusal, decide
from hub.domain.disclosure import categorise
from hub.domain.error import HubError
from schemas.envelope import ConsentSummary, ReferralFacts, RiskLevel
from schemas.policy import default_disclosure_policy
from schemas.profile import validate_referral

SAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "samples"
AT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
DC = "https://qixin.example.org/fhir/CodeSystem/data-category"
PATIENT = "urn:uuid:6f1c2a2e-7d1f-4c1e-9a51-3f0e9a5b0004"

# One unmistakable piece of content per data category in the test referral.
MARKERS = {
    "identity": ["张小明"],
    "contact": ["138-0000-0001", "李芳"],
    "demographics": ["初二", "2012-03"],
    "screening": ["44261-6"],
    "risk": ["suicidal-ideation", "退缩行为"],
    "family": ["父母半年前离异"],
    "case": ["CASE-证人笔录"],
    "clinical": ["F32.1"],
    "education": ["EDU-半天返校"],
}
FREE_TEXT = ["退缩行为", "父母半年前离异", "CASE-证人笔录", "EDU-半天返校"]
UNKNOWN = ["UNKNOWN-婚姻状况", "UNKNOWN-extension", "UNKNOWN-narrative"]


def _observation(n: int, category: str, text: str) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:6f1c2a2e-7d1f-4c1e-9a51-3f0e9a5b{n:04d}",
        "resource": {
            "resourceType": "Observation",
            "id": f"obs-{category}",
            "status": "final",
            "category": [{"coding": [{"system": DC, "code": category}]}],
            "code": {"text": category},
            "subject": {"reference": PATIENT},
            "valueString": text,
        },
    }


def referral_bundle() -> dict[str, Any]:
    """The school → CAMHS sample plus case, clinical and education content and unlabelled extras."""
    bundle: dict[str, Any] = json.loads(
        (SAMPLES / "referral-school-camhs-high.json").read_text(encoding="utf-8")
    )
    bundle["entry"].append(_observation(20, "case", "CASE-证人笔录：曾目睹校外斗殴"))
    bundle["entry"].append(_observation(21, "education", "EDU-半天返校，暂缓体育测试"))
    bundle["entry"].append(
        {
            "fullUrl": "urn:uuid:6f1c2a2e-7d1f-4c1e-9a51-3f0e9a5b0022",
            "resource": {
                "resourceType": "Condition",
                "id": "cond-1",
                "subject": {"reference": PATIENT},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F32.1"}]},
            },
        }
    )
    patient = bundle["entry"][3]["resource"]
    patient["maritalStatus"] = {"text": "UNKNOWN-婚姻状况"}
    patient["extension"].append({"url": "https://example.org/unknown", "valueString": "UNKNOWN-extension"})
    patient["text"] = {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">UNKNOWN-narrative 张小明</div>',
    }
    bundle["entry"][1]["resource"]["for"]["display"] = "张小明"  # a name in a reference display
    return bundle


BUNDLE = referral_bundle()
BASE = validate_referral(BUNDLE, now=AT)
POLICY = default_disclosure_policy()
CONTENT = categorise(BASE.bundle, POLICY)
SAMPLE_CONSENT = BASE.facts.consents[0]


def found(view: dict[str, Any]) -> set[str]:
    """Categories whose markers appear anywhere in the view (independent of the policy's labels)."""
    text = json.dumps(view, ensure_ascii=False)
    return {cat for cat, marks in MARKERS.items() if any(m in text for m in marks)}


def consent(**kw: Any) -> ConsentSummary:
    values: dict[str, Any] = SAMPLE_CONSENT.model_dump()
    values.update(kw)
    return ConsentSummary(**values)


@dataclass(frozen=True)
class Case:
    basis: str | None
    to: tuple[str, str]
    purpose: str
    outcome: str  # "disclose" or a refusal reason code
    discloses: frozenset[str] = frozenset()
    consents: tuple[ConsentSummary, ...] | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    categories: tuple[str, ...] | None = None
    reason: str | None = None


CAMHS = ("camhs-songjiang-mhc", "camhs")
POLICE = ("police-songjiang", "police")
CIVIL = ("civil-affairs-songjiang", "civil-affairs")
STREET = ("street-centre-yueyang", "street-centre")
DISTRICT = ("district-centre", "district-centre")
OFFICE = ("district-office", "district-office")
SCHOOL = ("school-songjiang-no2-middle", "school")
ABUSE = {"reasons": ["suspected-abuse-neglect"]}
CRISIS = {"risk_level": RiskLevel.CRISIS}
MANDATORY = frozenset({"identity", "demographics", "contact", "risk"})
CONSENTED = frozenset({"identity", "demographics", "contact", "screening", "risk"})

CASES: dict[str, Case] = {
    # consent
    "consent/school->camhs treatment": Case("consent", CAMHS, "treatment", "disclose", CONSENTED),
    "consent/recipient named by org id": Case(
        "consent",
        CAMHS,
        "treatment",
        "disclose",
        CONSENTED,
        consents=(consent(recipients=["camhs-songjiang-mhc"]),),
    ),
    "consent/revoked": Case(
        "consent", CAMHS, "treatment", "consent-revoked", consents=(consent(status="inactive"),)
    ),
    "consent/proposed only": Case(
        "consent", CAMHS, "treatment", "consent-not-active", consents=(consent(status="proposed"),)
    ),
    "consent/expired": Case(
        "consent", CAMHS, "treatment", "consent-expired", consents=(consent(end=AT - timedelta(seconds=1)),)
    ),
    "consent/not yet valid": Case(
        "consent",
        CAMHS,
        "treatment",
        "consent-not-yet-valid",
        consents=(consent(start=AT + timedelta(days=1)),),
    ),
    "consent/purpose not covered": Case("consent", CAMHS, "follow-up", "purpose-not-covered"),
    "consent/recipient not covered": Case("consent", STREET, "treatment", "recipient-not-covered"),
    "consent/none at all": Case("consent", CAMHS, "treatment", "no-consent", consents=()),
    "consent/under 14, student only": Case(
        "consent",
        CAMHS,
        "treatment",
        "guardian-consent-required",
        facts={"age": 12},
        consents=(consent(grantor="student", student_assent=True),),
    ),
    "consent/under 14, guardian, no assent needed": Case(
        "consent",
        CAMHS,
        "treatment",
        "disclose",
        CONSENTED,
        facts={"age": 12},
        consents=(consent(grantor="guardian", student_assent=False),),
    ),
    "consent/14-17, guardian without assent": Case(
        "consent",
        CAMHS,
        "treatment",
        "student-assent-required",
        facts={"age": 15},
        consents=(consent(grantor="guardian", student_assent=False),),
    ),
    "consent/14-17, guardian with recorded assent": Case(
        "consent",
        CAMHS,
        "treatment",
        "disclose",
        CONSENTED,
        facts={"age": 15},
        consents=(consent(grantor="guardian", student_assent=True),),
    ),
    "consent/adult, guardian only": Case(
        "consent",
        CAMHS,
        "treatment",
        "student-consent-required",
        facts={"age": 18},
        consents=(consent(grantor="guardian"),),
    ),
    "consent/adult, own consent": Case(
        "consent",
        CAMHS,
        "treatment",
        "disclose",
        CONSENTED,
        facts={"age": 18},
        consents=(consent(grantor="student"),),
    ),
    "consent/asked for screening only": Case(
        "consent", CAMHS, "treatment", "disclose", frozenset({"screening"}), categories=("screening",)
    ),
    "consent/asked for family only": Case(
        "consent", CAMHS, "treatment", "categories-not-covered", categories=("family",)
    ),
    "consent/two consents add up": Case(
        "consent",
        CAMHS,
        "treatment",
        "disclose",
        CONSENTED | {"family"},
        consents=(SAMPLE_CONSENT, consent(consent_id="consent-family", categories=["family"])),
    ),
    "consent/school education, discharge data": Case(
        "consent",
        SCHOOL,
        "education-support",
        "disclose",
        frozenset({"education", "demographics"}),
        consents=(
            consent(
                recipients=["school"],
                purposes=["education-support"],
                categories=["education", "demographics"],
            ),
        ),
    ),
    "consent/district office only for oversight": Case(
        "consent", OFFICE, "treatment", "purpose-not-permitted-for-recipient"
    ),
    # statutory
    "statutory/school->police mandatory report": Case(
        "statutory", POLICE, "safeguarding", "disclose", MANDATORY, facts=ABUSE
    ),
    "statutory/mandatory report to civil affairs": Case(
        "statutory", CIVIL, "safeguarding", "disclose", MANDATORY, facts=ABUSE
    ),
    "statutory/police without suspected harm": Case(
        "statutory", POLICE, "safeguarding", "statutory-not-applicable"
    ),
    "statutory/police for treatment": Case(
        "statutory", POLICE, "treatment", "purpose-not-covered", facts=ABUSE
    ),
    "statutory/camhs is not a mandatory recipient": Case(
        "statutory", CAMHS, "safeguarding", "recipient-not-covered", facts=ABUSE
    ),
    "statutory/school is not a mandatory recipient": Case(
        "statutory", SCHOOL, "safeguarding", "recipient-not-covered", facts=ABUSE
    ),
    "statutory/police asked for screening": Case(
        "statutory", POLICE, "safeguarding", "categories-not-covered", facts=ABUSE, categories=("screening",)
    ),
    "statutory/oversight de-identified": Case(
        "statutory",
        OFFICE,
        "oversight-statistics",
        "disclose",
        frozenset({"demographics", "risk", "screening"}),
    ),
    "statutory/case support to district centre": Case(
        "statutory",
        DISTRICT,
        "safeguarding",
        "disclose",
        frozenset({"identity", "demographics", "contact", "risk", "case"}),
        facts={"reasons": ["case-support"], "source_type": "police"},
    ),
    # emergency
    "emergency/crisis to camhs": Case(
        "emergency",
        CAMHS,
        "crisis-intervention",
        "disclose",
        MANDATORY,
        facts=CRISIS,
        reason="来电称今晚准备服药",
    ),
    "emergency/crisis to district centre": Case(
        "emergency",
        DISTRICT,
        "crisis-intervention",
        "disclose",
        MANDATORY,
        facts=CRISIS,
        reason="hotline crisis",
    ),
    "emergency/crisis to police": Case(
        "emergency",
        POLICE,
        "crisis-intervention",
        "disclose",
        MANDATORY,
        facts=CRISIS,
        reason="rescue needed",
    ),
    "emergency/not to a school": Case(
        "emergency", SCHOOL, "crisis-intervention", "recipient-not-covered", facts=CRISIS, reason="x"
    ),
    "emergency/no reason": Case(
        "emergency", CAMHS, "crisis-intervention", "emergency-reason-required", facts=CRISIS
    ),
    "emergency/blank reason": Case(
        "emergency", CAMHS, "crisis-intervention", "emergency-reason-required", facts=CRISIS, reason="   "
    ),
    "emergency/not a crisis": Case(
        "emergency",
        CAMHS,
        "crisis-intervention",
        "emergency-risk-too-low",
        facts={"risk_level": RiskLevel.ELEVATED},
        reason="x",
    ),
    "emergency/not for treatment": Case(
        "emergency", CAMHS, "treatment", "purpose-not-covered", facts=CRISIS, reason="x"
    ),
    # no basis
    "none/no basis": Case(None, CAMHS, "treatment", "no-basis"),
    "none/unknown basis": Case("legitimate-interest", CAMHS, "treatment", "basis-unknown"),
    "none/unknown purpose": Case("consent", CAMHS, "marketing", "purpose-unknown"),
    "none/unknown recipient type": Case("consent", ("x", "hospital"), "treatment", "recipient-type-unknown"),
}


def run(case: Case) -> Disclosure | Refusal:
    facts: ReferralFacts = BASE.facts.model_copy(update=case.facts)
    return decide(
        facts,
        CONTENT,
        recipient=Recipient(*case.to),
        purpose=case.purpose,
        basis=case.basis,
        at=AT,
        consents=case.consents,
        categories=case.categories,
        reason=case.reason,
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_decision(name: str) -> None:
    case = CASES[name]
    decision = run(case)
    if case.outcome != "disclose":
        assert isinstance(decision, Refusal), decision
        assert decision.reason_code == case.outcome
        assert decision.message
        return
    assert isinstance(decision, Disclosure), decision
    assert decision.categories == case.discloses
    assert decision.disclosed <= decision.categories
    # What the recipient actually receives, judged by content, not by the decision's own labels:
    assert found(decision.view) == case.discloses & CONTENT.categories
    text = json.dumps(decision.view, ensure_ascii=False)
    for unknown in UNKNOWN:
        assert unknown not in text
    assert "张小明" not in text or "identity" in decision.categories


def test_school_to_camhs_with_guardian_consent_shares_screening_risk_contact_not_family_or_case() -> None:
    decision = run(CASES["consent/school->camhs treatment"])
    assert isinstance(decision, Disclosure)
    seen = found(decision.view)
    assert {"screening", "risk", "contact"} <= seen
    assert not {"family", "case", "clinical", "education"} & seen
    assert decision.consent_ids == ("psn:k1:7QX2M4ZKD5R3T6YB/consent-0001",)
    assert decision.withheld == {"family", "case", "clinical", "education"}
    assert not decision.review_required
    assert decision.expires_at is None


def test_mandatory_report_discloses_only_the_minimum_set() -> None:
    decision = run(CASES["statutory/school->police mandatory report"])
    assert isinstance(decision, Disclosure)
    assert decision.duty == "mandatory-report"
    assert found(decision.view) == MANDATORY
    types = {e["resource"]["resourceType"] for e in decision.view["entry"]}
    assert "Observation" not in types
    assert "Condition" not in types
    assert "Consent" not in types


def test_break_glass_is_flagged_for_review_and_expires() -> None:
    decision = run(CASES["emergency/crisis to camhs"])
    assert isinstance(decision, Disclosure)
    assert decision.review_required
    assert decision.expires_at == AT + timedelta(hours=72)
    assert decision.inform_guardian
    assert decision.reason == "来电称今晚准备服药"
    assert "来电称今晚准备服药" not in json.dumps(decision.record(), ensure_ascii=False)


def test_break_glass_does_not_tell_a_guardian_suspected_of_harm() -> None:
    case = CASES["emergency/crisis to camhs"]
    facts = BASE.facts.model_copy(
        update={"risk_level": RiskLevel.CRISIS, "reasons": ["suspected-abuse-neglect"]}
    )
    decision = decide(
        facts,
        CONTENT,
        recipient=Recipient(*case.to),
        purpose=case.purpose,
        basis="emergency",
        at=AT,
        reason="x",
    )
    assert isinstance(decision, Disclosure)
    assert not decision.inform_guardian


def test_break_glass_reason_comes_from_the_bundle_by_default() -> None:
    bundle = json.loads((SAMPLES / "referral-hotline-crisis-camhs.json").read_text(encoding="utf-8"))
    referral = validate_referral(bundle, now=AT)
    decision = decide(
        referral.facts,
        categorise(referral.bundle, POLICY),
        recipient=Recipient(*CAMHS),
        purpose="crisis-intervention",
        basis="emergency",
        at=AT,
    )
    assert isinstance(decision, Disclosure)
    assert decision.reason
    assert decision.reason.startswith("知心365来电")


def test_oversight_view_is_de_identified_without_free_text() -> None:
    decision = run(CASES["statutory/oversight de-identified"])
    assert isinstance(decision, Disclosure)
    assert decision.deidentified
    text = json.dumps(decision.view, ensure_ascii=False)
    for marker in MARKERS["identity"] + MARKERS["contact"] + FREE_TEXT:
        assert marker not in text


def test_only_the_basis_consent_travels_with_a_consent_disclosure() -> None:
    other = consent(consent_id="consent-0001-other", recipients=["police"])
    decision = run(Case("consent", CAMHS, "treatment", "disclose", consents=(SAMPLE_CONSENT, other)))
    assert isinstance(decision, Disclosure)
    consents = [e["resource"] for e in decision.view["entry"] if e["resource"]["resourceType"] == "Consent"]
    assert [c["id"] for c in consents] == ["consent-0001"]
    statutory = run(CASES["statutory/school->police mandatory report"])
    assert isinstance(statutory, Disclosure)
    assert not [e for e in statutory.view["entry"] if e["resource"]["resourceType"] == "Consent"]


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return own + [r for v in node.values() for r in _references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _references(v)]
    return []


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.outcome == "disclose"))
def test_every_view_is_a_valid_fhir_bundle_whose_references_resolve(name: str) -> None:
    decision = run(CASES[name])
    assert isinstance(decision, Disclosure)
    Bundle.model_validate(decision.view)
    urls = {e["fullUrl"] for e in decision.view["entry"]}
    assert set(_references(decision.view)) <= urls
    assert decision.view["entry"][0]["resource"]["resourceType"] == "MessageHeader"


def test_person_references_lose_their_display_text() -> None:
    decision = run(CASES["consent/asked for screening only"])
    assert isinstance(decision, Disclosure)
    task = decision.view["entry"][1]["resource"]
    assert task["for"] == {"reference": PATIENT}


def test_refusal_maps_to_a_403_hub_error() -> None:
    refusal = run(CASES["consent/revoked"])
    assert isinstance(refusal, Refusal)
    error = refusal.error()
    assert isinstance(error, HubError)
    assert (error.status, error.code, error.details) == (
        403,
        "disclosure-refused",
        [{"reason_code": "consent-revoked"}],
    )
    assert refusal.record()["decision"] == "refuse"


def test_record_is_json_and_has_no_view() -> None:
    decision = run(CASES["consent/school->camhs treatment"])
    record = decision.record()
    json.dumps(record)
    assert "view" not in record
    assert record["basis"] == "consent"


def _cli(*args: str) -> Any:
    import typer
    from typer.testing import CliRunner

    from hub.cli import disclose as disclose_cli

    app = typer.Typer()
    disclose_cli.register(app)
    app.command("noop")(lambda: None)
    return CliRunner().invoke(app, ["disclose", *args])


def test_cli_disclose_prints_the_decision_and_the_view() -> None:
    bundle = str(SAMPLES / "referral-school-police-mandatory-report.json")
    res = _cli(
        "--to",
        "police-songjiang",
        "--to-type",
        "police",
        "--purpose",
        "safeguarding",
        "--at",
        "2026-12-01T10:00:00+08:00",
        bundle,
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["decision"], out["basis"], out["duty"]) == ("disclose", "statutory", "mandatory-report")
    assert out["categories"] == sorted(MANDATORY)
    assert out["view"]["resourceType"] == "Bundle"
    assert "父亲长期酗酒" not in res.output  # family data stays out of a mandatory report


def test_cli_disclose_resolves_the_recipient_type_from_the_directory_and_exits_3_on_refusal() -> None:
    bundle = str(SAMPLES / "referral-school-camhs-high.json")
    res = _cli(
        "--to",
        "street-centre-yueyang",
        "--purpose",
        "follow-up",
        "--no-view",
        "--at",
        "2026-12-01T10:00:00+08:00",
        bundle,
    )
    assert res.exit_code == 3, res.output
    out = json.loads(res.output)
    assert out["recipient"]["agency_type"] == "street-centre"
    assert out["reason_code"] == "recipient-not-covered"


def test_the_policy_covers_every_resource_the_profile_accepts() -> None:
    from schemas.profile import SUPPORTED_RESOURCES

    assert set(POLICY.resources) == SUPPORTED_RESOURCES


def test_a_wrong_policy_file_is_refused_with_every_problem() -> None:
    from schemas.policy import DEFAULT_POLICY_FILE, PolicyError, parse_disclosure_policy

    text = DEFAULT_POLICY_FILE.read_text(encoding="utf-8")
    text = text.replace("name: identity", "name: identiy").replace("max_hours: 72", "max_hours: 0")
    text = text.replace("recipients: [police, civil-affairs]", "recipients: [polise, civil-affairs]")
    with pytest.raises(PolicyError) as exc:
        parse_disclosure_policy(text, "bad.yaml")
    problems = "\n".join(exc.value.problems)
    assert "resources.Patient.elements.name: unknown category 'identiy'" in problems
    assert "emergency.max_hours" in problems
    assert "statutory.mandatory-report.recipients: 'polise'" in problems


def test_feedback_is_categorised_by_its_declared_category() -> None:
    bundle = json.loads((SAMPLES / "messages" / "feedback-camhs-school.json").read_text(encoding="utf-8"))
    content = categorise(bundle, POLICY)
    assert content.categories == {"education", "demographics"}
