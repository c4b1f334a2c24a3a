"""Loading rule sets: exact file:line errors for broken files, version stability, hot reload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hub.adapters.directory import load_directory
from hub.adapters.rules import RuleSetHolder, RuleSetInvalid, build_ruleset, check_ruleset, parse_located
from hub.domain.directory import Directory
from hub.domain.routing import DATA_CATEGORIES, FACT_FIELDS, LEGAL_BASES, PURPOSES, REFERRAL_REASONS

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "routing_rules"
BROKEN = Path(__file__).resolve().parent / "fixtures" / "rules_broken"
FALLBACK = ("fallback.yaml", (RULES / "90-fallback.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def directory() -> Directory:
    return load_directory(RULES / "directory" / "songjiang.yaml")


EXPECTED = {
    "unknown_field.yaml": [
        "unknown_field.yaml:4: unknown field 'priorty' in a rule (did you mean 'priority'?); allowed: id, "
        "description, priority, pathway, match, when, routes, stop",
        "unknown_field.yaml:8: a route of rule 'typo-in-rule' needs 'legal_basis'",
        "unknown_field.yaml:10: unknown field 'legal_base' in a route of rule 'typo-in-rule' (did you "
        "mean 'legal_basis'?); allowed: to, role, purpose, legal_basis, priority, sla, escalation, "
        "categories, queue",
    ],
    "unknown_code.yaml": [
        "unknown_code.yaml:5: unknown referral-reason code 'self-harms' in match.reasons "
        "(did you mean 'self-harm'?)",
        "unknown_code.yaml:6: when: unknown agency-type code 'hospital'",
        "unknown_code.yaml:9: unknown purpose code 'therapy' in purpose",
    ],
    "cel_syntax.yaml": [
        "cel_syntax.yaml:8: when: CEL syntax error at column 20: unexpected '&&'",
    ],
    "cel_type.yaml": [
        "cel_type.yaml:4: when: '==' cannot compare int with string",
        "cel_type.yaml:10: when: unknown field 'risk' (did you mean 'risk_level'?)",
        "cel_type.yaml:16: when: the condition must be a bool, it is int",
    ],
    "unresolvable_recipient.yaml": [
        "unresolvable_recipient.yaml:8: unresolvable recipient: no active organisation "
        "'camhs-songjiang-mch' in the directory (did you mean 'camhs-songjiang-mhc'?)",
        "unresolvable_recipient.yaml:12: queue 'night-desk' is not a queue of camhs",
        "unresolvable_recipient.yaml:16: unresolvable escalation: no organisation "
        "'district-centre-old' in the directory",
    ],
    "duplicate_id.yaml": [
        "duplicate_id.yaml:10: duplicate rule id 'elevated' (first at duplicate_id.yaml:3)",
    ],
    "shadowed.yaml": [
        "shadowed.yaml:12: rule 'crisis-self-harm' is shadowed by 'any-high-risk' (shadowed.yaml:3): "
        "that rule stops evaluation and matches everything this one can",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_rule_files_give_exact_file_line_errors(name: str, directory: Directory) -> None:
    text = (BROKEN / name).read_text(encoding="utf-8")
    ruleset, issues = build_ruleset([(name, text), FALLBACK], directory)
    assert ruleset is None
    assert [str(i) for i in issues] == EXPECTED[name]


def test_every_broken_fixture_is_covered() -> None:
    assert sorted(p.name for p in BROKEN.glob("*.yaml")) == sorted(EXPECTED)


def test_checking_the_broken_directory_reports_every_problem_at_once(directory: Directory) -> None:
    ruleset, issues = check_ruleset(BROKEN, directory)
    assert ruleset is None
    rendered = [str(i).replace(f"{BROKEN}/", "") for i in issues]
    for lines in EXPECTED.values():
        for line in lines:
            assert line in rendered
    assert any("the rule set has no fallback" in r for r in rendered)


def test_yaml_syntax_errors_and_duplicate_keys_have_lines() -> None:
    _, issues = parse_located("rules:\n  - id: a\n    id: b\n", "f.yaml")
    assert [str(i) for i in issues] == ["f.yaml:3: duplicate key 'id' (first at line 2)"]
    node, issues = parse_located("rules:\n  - id: [a\n", "g.yaml")
    assert node is None
    assert str(issues[0]).startswith("g.yaml:3: YAML syntax error")


def test_the_shipped_rules_are_valid(directory: Directory) -> None:
    ruleset, issues = check_ruleset(RULES, directory)
    assert issues == []
    assert ruleset is not None
    assert {r.pathway for r in ruleset.rules} >= {
        "crisis",
        "mandatory-report",
        "green-channel",
        "town-follow-up",
        "case-support",
        "return-to-school",
    }


def _copy_rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    target.mkdir()
    for path in RULES.glob("*.yaml"):
        shutil.copy(path, target / path.name)
    return target


def test_comments_do_not_change_the_version_but_an_sla_does(tmp_path: Path, directory: Directory) -> None:
    rules = _copy_rules(tmp_path)
    v1 = check_ruleset(rules, directory)[0]
    crisis = rules / "20-crisis.yaml"
    crisis.write_text("# reviewed 2026-12\n" + crisis.read_text(encoding="utf-8"), encoding="utf-8")
    v2 = check_ruleset(rules, directory)[0]
    crisis.write_text(
        crisis.read_text(encoding="utf-8").replace("acknowledge: 30m", "acknowledge: 20m"), "utf-8"
    )
    v3 = check_ruleset(rules, directory)[0]
    assert v1 is not None
    assert v2 is not None
    assert v3 is not None
    assert v1.version == v2.version != v3.version


def test_hot_reload_keeps_the_last_valid_set(tmp_path: Path, directory: Directory) -> None:
    rules = _copy_rules(tmp_path)
    holder = RuleSetHolder(rules, directory)
    good = holder.version
    assert holder.reload_if_changed() is None

    crisis = rules / "20-crisis.yaml"
    original = crisis.read_text(encoding="utf-8")
    crisis.write_text(original.replace("risk_level: [4]", "risk_level: [five]"), encoding="utf-8")
    outcome = holder.reload_if_changed()
    assert outcome is not None
    assert not outcome.ok
    assert not outcome.changed
    assert outcome.version == good == holder.version
    assert any(str(i).endswith("match.risk_level must be an integer") for i in outcome.issues)

    crisis.write_text(original.replace("acknowledge: 30m", "acknowledge: 15m"), encoding="utf-8")
    outcome = holder.reload()
    assert outcome.ok
    assert outcome.changed
    assert outcome.previous == good
    assert holder.version == outcome.version != good


def test_a_worker_refuses_to_start_on_an_invalid_set(tmp_path: Path, directory: Directory) -> None:
    rules = _copy_rules(tmp_path)
    shutil.copy(BROKEN / "duplicate_id.yaml", rules / "50-dup.yaml")
    with pytest.raises(RuleSetInvalid) as caught:
        RuleSetHolder(rules, directory)
    assert caught.value.code == "ruleset-invalid"
    assert caught.value.details[0]["line"] == 10


def test_the_readme_documents_every_fact() -> None:
    text = (RULES / "README.md").read_text(encoding="utf-8")
    for fact in FACT_FIELDS:
        assert f"| `{fact.name}` |" in text, fact.name


def test_the_rules_router_plans_for_the_pipeline(directory: Directory) -> None:
    from datetime import datetime, timedelta, timezone

    from hub.adapters.rules import RulesRouter
    from hub.adapters.workcalendar import ChinaWorkCalendar
    from schemas.envelope import ReferralFacts

    cst = timezone(timedelta(hours=8))
    router = RulesRouter(RuleSetHolder(RULES, directory), ChinaWorkCalendar())
    friday = datetime(2026, 11, 27, 16, 0, tzinfo=cst)
    facts = ReferralFacts(
        source_org="school-sijing-middle",
        source_type="school",
        reasons=["bullying"],
        risk_level=2,
        priority="routine",
        town="sijing",
    )
    plan = router.plan(facts, friday)
    assert plan.matched
    assert plan.ruleset_version == router.version
    [route] = plan.routes
    assert (route.recipient_org, route.rule_id) == ("street-centre-sijing", "elevated-street-centre")
    assert route.ack_due == datetime(2026, 12, 3, 0, 0, tzinfo=cst)  # 3 working days: end of Wednesday
    assert route.first_contact_due == friday + timedelta(days=14)
    unplaced = router.plan(facts.model_copy(update={"town": None}), friday)
    assert not unplaced.matched  # the back-stop took it: the pipeline writes a dead letter
    assert [r.recipient_org for r in unplaced.routes] == ["district-centre"]


@pytest.mark.parametrize(
    ("system", "ours"),
    [
        ("referral-reason", set(REFERRAL_REASONS)),
        ("purpose", set(PURPOSES)),
        ("data-category", set(DATA_CATEGORIES)),
        ("legal-basis", set(LEGAL_BASES)),
    ],
)
def test_the_rule_vocabulary_is_the_profiles_code_systems(system: str, ours: set[str]) -> None:
    data = json.loads((ROOT / "schemas" / "codesystems" / f"{system}.json").read_text(encoding="utf-8"))
    assert {c["code"] for c in data["concept"]} == ours


def test_the_directory_towns_are_the_profiles_towns(directory: Directory) -> None:
    data = json.loads((ROOT / "schemas" / "codesystems" / "town.json").read_text(encoding="utf-8"))
    assert [c["code"] for c in data["concept"]] == [t.code for t in directory.towns]
