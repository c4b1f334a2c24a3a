"""The explanation of each shipped pathway: which rules matched, and why the others did not."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from hub.adapters.directory import load_directory
from hub.adapters.rules import load_ruleset
from hub.domain.routing import RoutingDecision, decide, rule_facts
from schemas.envelope import ReferralFacts

ROOT = Path(__file__).resolve().parents[2]
DIRECTORY = load_directory(ROOT / "routing_rules" / "directory" / "songjiang.yaml")
RULESET = load_ruleset(ROOT / "routing_rules", DIRECTORY)
CST = timezone(timedelta(hours=8))
MONDAY_10 = datetime(2026, 11, 30, 10, 0, tzinfo=CST)
CONSENT_CAMHS = {
    "consent_id": "c",
    "status": "active",
    "grantor": "guardian",
    "recipients": ["camhs"],
    "purposes": ["treatment"],
}


def _decide(now: datetime = MONDAY_10, declined: tuple[str, ...] = (), **facts: Any) -> RoutingDecision:
    referral = ReferralFacts.model_validate({"priority": "routine", "age": 14, **facts})
    return decide(
        rule_facts(
            referral, now=now, working_day=now.isoweekday() <= 5, declined_by=declined, directory=DIRECTORY
        ),
        RULESET,
        DIRECTORY,
    )


def _why(decision: RoutingDecision) -> dict[str, tuple[str, str]]:
    return {t.rule_id: (t.outcome, t.reason) for t in decision.explanation}


def test_explanation_accounts_for_every_rule_with_its_file_and_line() -> None:
    decision = _decide(
        source_org="school-sijing-middle",
        source_type="school",
        reasons=["bullying"],
        risk_level=2,
        town="sijing",
    )
    assert [t.rule_id for t in decision.explanation] == [r.id for r in RULESET.rules]
    for trace in decision.explanation:
        file, line = trace.origin.rsplit(":", 1)
        assert file.endswith(".yaml")
        assert int(line) > 0
    assert decision.ruleset_version == RULESET.version
    assert decision.directory_version == DIRECTORY.version


def test_crisis_pathway_explained() -> None:
    decision = _decide(
        source_org="police-songjiang",
        source_type="police",
        reasons=["case-support", "self-harm"],
        risk_level=4,
        priority="stat",
        town="jiuting",
    )
    why = _why(decision)
    assert why["crisis-any-source"] == ("matched", "match holds")
    # case support would have matched, but the crisis rule stops evaluation first.
    assert why["case-support-justice"][0] == "not-evaluated"
    assert why["case-support-justice"][1].startswith("stopped by crisis-any-source (")
    assert why["abuse-neglect-mandatory-report"] == (
        "not-matched",
        'match.reasons: none of ["case-support", "self-harm"] in ["suspected-abuse-neglect"]',
    )
    assert [(r.recipient, r.legal_basis) for r in decision.routes] == [
        ("district-centre", "emergency"),
        ("camhs-songjiang-mhc", "emergency"),
    ]


def test_mandatory_report_pathway_explained() -> None:
    decision = _decide(
        source_org="school-chedun-school",
        source_type="school",
        reasons=["suspected-abuse-neglect"],
        risk_level=3,
        town="chedun",
    )
    why = _why(decision)
    assert why["abuse-neglect-mandatory-report"][0] == "matched"
    assert why["high-risk-green-channel"] == (
        "not-matched",
        "when is false: has_consent\n"
        '  && "camhs" in consent_recipients\n'
        '  && "treatment" in consent_purposes\n',
    )
    assert [r.recipient for r in decision.routes] == ["police-songjiang", "civil-affairs-songjiang"]
    assert decision.routes[0].legal_basis == "statutory"


def test_green_channel_pathway_explained() -> None:
    decision = _decide(
        source_org="school-jiuting-middle",
        source_type="school",
        reasons=["self-harm"],
        risk_level=3,
        town="jiuting",
        consents=[CONSENT_CAMHS],
    )
    why = _why(decision)
    assert why["high-risk-green-channel"] == ("matched", "match and when hold")
    assert why["high-risk-out-of-hours-notice"] == ("not-matched", "match.office_hours: true not in [false]")
    # Below the stopping green channel: a rule whose match fails says so, not "stopped".
    assert why["elevated-street-centre"] == ("not-matched", "match.risk_level: 3 not in [2]")
    assert decision.routes[0].recipient == "camhs-songjiang-mhc"


def test_green_channel_without_consent_explains_the_fallback() -> None:
    decision = _decide(
        source_org="school-jiuting-middle",
        source_type="school",
        reasons=["self-harm"],
        risk_level=3,
        town="jiuting",
    )
    assert not decision.matched
    assert decision.fallback
    assert _why(decision)["high-risk-green-channel"][1].startswith("when is false: has_consent")
    assert decision.notes == ("no rule matched",)


def test_declined_pathway_explained() -> None:
    decision = _decide(
        source_org="school-jiuting-middle",
        source_type="school",
        reasons=["self-harm"],
        risk_level=3,
        town="jiuting",
        consents=[CONSENT_CAMHS],
        declined=("camhs-songjiang-mhc",),
    )
    [route] = decision.routes
    assert (route.recipient, route.skipped, route.pathway_step) == (
        "camhs-songjiang-central",
        ("camhs-songjiang-mhc",),
        1,
    )
    assert _why(decision)["high-risk-green-channel"] == ("matched", "match and when hold")


@pytest.mark.parametrize(
    ("facts", "rule", "recipients"),
    [
        (
            {
                "source_org": "school-sijing-middle",
                "source_type": "school",
                "reasons": ["bullying"],
                "risk_level": 2,
                "town": "sijing",
            },
            "elevated-street-centre",
            ["street-centre-sijing"],
        ),
        (
            {
                "source_org": "procuratorate-songjiang",
                "source_type": "procuratorate",
                "reasons": ["case-support"],
                "risk_level": 1,
                "town": "yexie",
            },
            "case-support-justice",
            ["district-centre", "street-centre-yexie"],
        ),
        (
            {
                "source_org": "camhs-songjiang-central",
                "source_type": "camhs",
                "reasons": ["post-discharge-return"],
                "risk_level": 1,
                "town": "yueyang",
                "school": "school-songjiang-no2-middle",
            },
            "discharge-return-to-school",
            ["school-songjiang-no2-middle", "street-centre-yueyang"],
        ),
    ],
)
def test_community_pathways_explained(facts: dict[str, Any], rule: str, recipients: list[str]) -> None:
    decision = _decide(**facts)
    assert _why(decision)[rule][0] == "matched"
    assert [r.recipient for r in decision.routes] == recipients
    # A town centre that an earlier rule already routed to is named once, and the later rule says so.
    for trace in decision.explanation:
        if trace.outcome == "matched" and not trace.recipients:
            assert "already routed by" in trace.reason


SAMPLES = sorted((ROOT / "schemas" / "samples").glob("referral-*.json"))


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_every_sample_referral_is_placed_by_a_rule(sample: Path) -> None:
    import json

    from hub.adapters.rules import facts_from_document
    from hub.adapters.workcalendar import ChinaWorkCalendar

    facts = facts_from_document(
        json.loads(sample.read_text(encoding="utf-8")), directory=DIRECTORY, calendar=ChinaWorkCalendar()
    )
    decision = decide(facts, RULESET, DIRECTORY)
    assert decision.matched
    assert not decision.fallback, decision.notes
