"""The referral profile: every sample is valid, every broken sample fails with exactly its issues."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.valueset import ValueSet
from typer.testing import CliRunner

from hub.cli import validate as validate_cli
from schemas import examples
from schemas.canonical import CS_AGENCY_TYPE, CS_RISK, SD_LEGAL_BASIS
from schemas.codesystem import FOLDER, terminology
from schemas.envelope import AgencyType, RiskLevel
from schemas.profile import (
    MAX_BUNDLE_BYTES,
    ConsentUpdate,
    FeedbackMessage,
    ProfileError,
    StatusUpdate,
    ValidatedReferral,
    age_at,
    national_id_valid,
    parse_instant,
    validate_message,
    validate_referral,
)

SAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "samples"
REFERRALS = sorted(SAMPLES.glob("*.json"))
MESSAGES = sorted((SAMPLES / "messages").glob("*.json"))
BROKEN = sorted(p for p in (SAMPLES / "broken").glob("*.json") if not p.name.endswith(".expected.json"))
NOW = datetime(2026, 12, 20, tzinfo=UTC)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def sample(name: str) -> dict[str, Any]:
    return load(SAMPLES / f"{name}.json")


def issues_of(data: dict[str, Any], **kw: Any) -> list[tuple[str, str]]:
    with pytest.raises(ProfileError) as exc:
        validate_message(data, now=NOW, **kw)
    return [(i.path, i.rule) for i in exc.value.issues]


def resource(bundle: dict[str, Any], rtype: str, k: int = 0) -> dict[str, Any]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype][k]


# --- samples ---------------------------------------------------------------------------------------


def test_there_is_a_sample_per_pathway() -> None:
    assert len(REFERRALS) == 7
    assert {p.stem for p in MESSAGES} == {
        "status-camhs-accepted",
        "feedback-camhs-school",
        "consent-update-revoked",
    }
    assert len(BROKEN) >= 10


@pytest.mark.parametrize("path", REFERRALS + MESSAGES, ids=lambda p: p.stem)
def test_every_sample_is_valid(path: Path) -> None:
    validate_message(load(path), size=path.stat().st_size, now=NOW)


# name -> (source type, requested recipient, risk, priority, claimed basis, age, suggested risk)
PATHWAYS = {
    "referral-school-camhs-high": ("school", "camhs-songjiang-mhc", 3, "asap", "consent", 14, 3),
    "referral-hotline-crisis-camhs": (
        "district-centre",
        "camhs-songjiang-mhc",
        4,
        "stat",
        "emergency",
        16,
        4,
    ),
    "referral-school-police-mandatory-report": ("school", "police-songjiang", 3, "asap", "statutory", 11, 1),
    "referral-school-street-centre-elevated": (
        "school",
        "street-centre-yueyang",
        2,
        "urgent",
        "consent",
        13,
        2,
    ),
    "referral-police-case-support-district-centre": (
        "police",
        "district-centre",
        2,
        "urgent",
        "consent",
        15,
        None,
    ),
    "referral-camhs-discharge-school": (
        "camhs",
        "school-songjiang-no2-middle",
        1,
        "routine",
        "consent",
        15,
        None,
    ),
    "referral-civil-affairs-welfare-street-centre": (
        "civil-affairs",
        "street-centre-yueyang",
        1,
        "routine",
        "consent",
        9,
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(PATHWAYS))
def test_referral_facts_per_pathway(name: str) -> None:
    source, requested, risk, priority, basis, age, suggested = PATHWAYS[name]
    referral = validate_referral(sample(name), now=NOW)
    facts = referral.facts
    assert (facts.source_type, facts.requested_recipient, facts.risk_level, facts.priority) == (
        AgencyType(source),
        requested,
        RiskLevel(risk),
        priority,
    )
    assert facts.legal_basis_claimed == basis
    assert facts.age == age
    assert facts.suggested_risk_level == (RiskLevel(suggested) if suggested else None)
    assert referral.referral_id.startswith("ref-")
    assert referral.idempotency_key == f"{facts.source_org}:{referral.message_id}"


def test_facts_carry_no_readable_pii() -> None:
    referral = validate_referral(sample("referral-school-police-mandatory-report"), now=NOW)
    text = referral.facts.model_dump_json()
    for pii in ("陈小雨", "310117", "137-0000-0023", "周敏", "岳阳街道某小区", "父亲", "淤青"):
        assert pii not in text


def test_consents_are_parsed_into_summaries() -> None:
    facts = validate_referral(sample("referral-school-camhs-high"), now=NOW).facts
    (c,) = facts.consents
    assert c.consent_id == "psn:k1:7QX2M4ZKD5R3T6YB/consent-0001"  # qualified by the student
    assert c.status == "active"
    assert c.grantor == "both"
    assert c.student_assent
    assert c.recipients == ["camhs"]
    assert c.purposes == ["treatment"]
    assert set(c.categories) == {"demographics", "contact", "screening", "risk", "identity"}
    assert c.start == datetime(2026, 11, 27, 16, tzinfo=UTC)
    assert c.end == datetime(2027, 5, 27, 16, tzinfo=UTC)


def test_consent_dates_without_time_cover_the_whole_day() -> None:
    facts = validate_referral(sample("referral-school-street-centre-elevated"), now=NOW).facts
    (c,) = facts.consents
    assert c.grantor == "guardian"
    assert not c.student_assent
    assert c.end == datetime(2027, 2, 28, 16, tzinfo=UTC)  # end of 2027-02-28 in Shanghai


def test_consent_recipient_can_be_an_organisation_id() -> None:
    facts = validate_referral(sample("referral-civil-affairs-welfare-street-centre"), now=NOW).facts
    assert facts.consents[0].recipients == ["street-centre-yueyang"]


def test_legal_basis_defaults_to_consent_only_when_a_consent_is_present() -> None:
    bundle = sample("referral-school-camhs-high")
    sr = resource(bundle, "ServiceRequest")
    sr["extension"] = [x for x in sr["extension"] if x["url"] != SD_LEGAL_BASIS]
    assert validate_referral(bundle, now=NOW).facts.legal_basis_claimed == "consent"
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Consent"]
    assert validate_referral(bundle, now=NOW).facts.legal_basis_claimed is None


def test_scores_and_safety_flag() -> None:
    referral = validate_referral(sample("referral-school-camhs-high"), now=NOW)
    (phq9,) = referral.scores
    assert (phq9.total, phq9.band.code if phq9.band else None, phq9.item9) == (21, "severe", 1)
    assert referral.facts.safety_assessment_due


def test_age_is_taken_at_the_referral_not_at_validation() -> None:
    bundle = sample("referral-school-camhs-high")  # born 2012-03, referred 2026-11
    assert validate_referral(bundle, now=datetime(2031, 1, 1, tzinfo=UTC)).facts.age == 14
    resource(bundle, "Task")["authoredOn"] = "2026-02-27T09:00:00+08:00"
    assert validate_referral(bundle, now=NOW).facts.age == 13


def test_other_messages_give_typed_results() -> None:
    status = validate_message(load(SAMPLES / "messages" / "status-camhs-accepted.json"), now=NOW)
    assert isinstance(status, StatusUpdate)
    assert (status.status, status.business_status, status.referral_id) == (
        "accepted",
        "appointment-booked",
        "ref-3c9d2f6a1b8e4d7c5a0f9e2b",
    )
    feedback = validate_message(load(SAMPLES / "messages" / "feedback-camhs-school.json"), now=NOW)
    assert isinstance(feedback, FeedbackMessage)
    assert feedback.recipients == ("school-songjiang-no2-middle",)
    assert feedback.categories == ("education",)
    assert feedback.task_status == "completed"
    update = validate_message(load(SAMPLES / "messages" / "consent-update-revoked.json"), now=NOW)
    assert isinstance(update, ConsentUpdate)
    assert [(c.consent_id, c.status) for c in update.consents] == [
        ("psn:k1:7QX2M4ZKD5R3T6YB/consent-0001", "inactive")
    ]
    referral = validate_message(sample("referral-school-camhs-high"), now=NOW)
    assert isinstance(referral, ValidatedReferral)


def test_validate_referral_rejects_other_events() -> None:
    with pytest.raises(ProfileError) as exc:
        validate_referral(load(SAMPLES / "messages" / "status-camhs-accepted.json"), now=NOW)
    assert [(i.path, i.rule) for i in exc.value.issues] == [
        ("$.entry[0].resource.eventCoding", "event-unexpected")
    ]


# --- broken samples -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_sample_gives_exactly_its_expected_issues(path: Path) -> None:
    expected = load(path.with_name(f"{path.stem}.expected.json"))
    got = issues_of(load(path))
    assert sorted(got) == sorted((e["path"], e["rule"]) for e in expected)


def test_every_broken_sample_has_an_expectation() -> None:
    for path in BROKEN:
        assert path.with_name(f"{path.stem}.expected.json").exists(), path


def test_all_issues_are_reported_at_once_across_resources() -> None:
    bundle = sample("referral-school-camhs-high")
    resource(bundle, "Patient")["birthDate"] = "2012-03-11"
    resource(bundle, "ServiceRequest")["reasonCode"][0]["coding"][0]["code"] = "bored"
    resource(bundle, "Consent")["provision"]["purpose"][0]["code"] = "marketing"
    resource(bundle, "Observation")["component"][0]["valueInteger"] = 7
    resource(bundle, "Task")["status"] = "accepted"
    resource(bundle, "RelatedPerson")["relationship"][0]["coding"][0]["code"] = "FRND"
    got = issues_of(bundle)
    assert set(got) >= {
        ("$.entry[3].resource.birthDate", "birthdate-precision"),
        ("$.entry[2].resource.reasonCode[0].coding[0].code", "code-unknown"),
        ("$.entry[4].resource.provision.purpose[0].code", "code-unknown"),
        ("$.entry[7].resource.component[0].valueInteger", "score-range"),
        ("$.entry[1].resource.status", "state"),
        ("$.entry[8].resource.relationship", "code-unknown"),
    }


def test_structural_and_profile_issues_come_together() -> None:
    got = issues_of(load(SAMPLES / "broken" / "fhir-structure.json"))
    rules = {rule for _, rule in got}
    assert any(r.startswith("fhir-") for r in rules)
    bundle = load(SAMPLES / "broken" / "fhir-structure.json")
    resource(bundle, "Patient")["gender"] = "boy"
    assert ("$.entry[3].resource.gender", "code-unknown") in issues_of(bundle)


def test_size_limit() -> None:
    assert issues_of(sample("referral-school-camhs-high"), size=MAX_BUNDLE_BYTES + 1) == [("$", "size-limit")]


def test_not_a_bundle() -> None:
    assert issues_of({"resourceType": "Patient"}) == [("$.resourceType", "resource-type")]


def test_duplicate_full_urls_and_future_dates() -> None:
    bundle = sample("referral-school-camhs-high")
    bundle["entry"][9]["fullUrl"] = bundle["entry"][8]["fullUrl"]
    resource(bundle, "Task")["authoredOn"] = "2027-01-01T00:00:00+08:00"
    got = issues_of(bundle)
    assert ("$.entry[9].fullUrl", "fullurl-duplicate") in got
    assert ("$.entry[1].resource.authoredOn", "date-future") in got


def test_a_referral_has_exactly_one_patient() -> None:
    bundle = sample("referral-school-camhs-high")
    other = copy.deepcopy(bundle["entry"][3])
    other["fullUrl"] = "urn:uuid:6f1c2a2e-7d1f-4c1e-9a51-3f0e9a5b0099"
    other["resource"]["id"] = "pt-other"
    bundle["entry"].append(other)
    resource(bundle, "Observation")["subject"] = {"reference": other["fullUrl"]}
    got = issues_of(bundle)
    assert ("$.entry", "cardinality") in got  # two Patients


def test_national_id_checksum() -> None:
    assert national_id_valid("11010519491231002X")
    assert not national_id_valid("110105194912310021")
    assert not national_id_valid("1101051949123100")


def test_priority_must_match_risk() -> None:
    bundle = sample("referral-school-camhs-high")
    resource(bundle, "ServiceRequest")["priority"] = "urgent"
    resource(bundle, "Task")["priority"] = "urgent"
    assert issues_of(bundle) == [("$.entry[2].resource.priority", "priority-risk")]


@pytest.mark.parametrize(
    ("value", "end", "expected"),
    [
        ("2026-11-28", False, datetime(2026, 11, 27, 16, tzinfo=UTC)),
        ("2026-11-28", True, datetime(2026, 11, 28, 16, tzinfo=UTC)),
        ("2026-12", True, datetime(2026, 12, 31, 16, tzinfo=UTC)),
        ("2026", True, datetime(2026, 12, 31, 16, tzinfo=UTC)),
        ("2026-11-28T10:00:00Z", True, datetime(2026, 11, 28, 10, tzinfo=UTC)),
        ("not a date", False, None),
    ],
)
def test_parse_instant(value: str, end: bool, expected: datetime | None) -> None:
    assert parse_instant(value, end=end) == expected


@pytest.mark.parametrize(
    ("birth", "at", "age"),
    [
        ("2012-03", "2026-03-01", 14),
        ("2012-03", "2026-02-28", 13),
        ("2012-12", "2026-11-30", 13),
        ("2012", "2026-11-30", None),
    ],
)
def test_age_from_birth_year_month(birth: str, at: str, age: int | None) -> None:
    assert age_at(birth, datetime.fromisoformat(f"{at}T12:00:00+08:00")) == age


# --- code systems, examples, CLI ---------------------------------------------------------------------


def test_code_systems_are_valid_fhir_with_zh_and_en() -> None:
    for path in sorted(FOLDER.glob("*.json")):
        raw = load(path)
        (CodeSystem if raw["resourceType"] == "CodeSystem" else ValueSet).model_validate(raw)
    t = terminology()
    assert len(t.code_systems) >= 8
    for cs in t.code_systems.values():
        for concept in cs.concepts.values():
            assert concept.display_zh, (cs.url, concept.code)
            assert concept.display_en, (cs.url, concept.code)
    assert t.system(CS_AGENCY_TYPE).codes() == {a.value for a in AgencyType}
    assert t.system(CS_RISK).codes() == {str(r.value) for r in RiskLevel}
    assert t.display(CS_AGENCY_TYPE, "camhs", "en") == "Child and adolescent mental health clinic (CAMHS)"


def test_openapi_examples_come_from_the_samples() -> None:
    assert set(examples.EXAMPLES) == {p.stem for p in REFERRALS}
    assert set(examples.MESSAGE_EXAMPLES) == {p.stem for p in MESSAGES}
    named = examples.openapi_examples()
    assert all(
        set(v) == {"summary", "value"} and v["value"]["resourceType"] == "Bundle" for v in named.values()
    )
    assert "CAMHS" in named["referral-school-camhs-high"]["summary"]


def test_cli_validate_prints_issues_and_exits_1() -> None:
    app = typer.Typer()
    validate_cli.register(app)
    app.command("noop")(lambda: None)  # keep "validate" a sub-command
    good = str(SAMPLES / "referral-school-camhs-high.json")
    bad = str(SAMPLES / "broken" / "emergency-without-reason.json")
    ok = CliRunner().invoke(app, ["validate", good])
    assert ok.exit_code == 0
    assert ok.output.strip() == f"{good}: valid"
    res = CliRunner().invoke(app, ["validate", good, bad])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert lines[0] == f"{good}: valid"
    assert f"{bad}: $.entry[2].resource.extension [emergency-reason-required] " in res.output
    assert len(lines) == 3
