"""The shipped rule set is valid and passes its example-based tests (the same cases `hub rules test` runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.adapters.directory import load_directory
from hub.adapters.rules import RuleTestCase, check_ruleset, load_rule_tests, run_rule_tests
from hub.adapters.workcalendar import ChinaWorkCalendar
from hub.domain.directory import Directory
from hub.domain.routing import RuleSet

RULES = Path(__file__).resolve().parent.parent
CASES, CASE_ISSUES = load_rule_tests(RULES / "tests")


@pytest.fixture(scope="module")
def directory() -> Directory:
    return load_directory(RULES / "directory" / "songjiang.yaml")


@pytest.fixture(scope="module")
def ruleset(directory: Directory) -> RuleSet:
    ruleset, issues = check_ruleset(RULES, directory)
    assert issues == []
    assert ruleset is not None
    return ruleset


def test_the_shipped_rules_and_their_tests_load_cleanly(ruleset: RuleSet) -> None:
    assert CASE_ISSUES == []
    assert len(CASES) >= 20
    assert ruleset.version.startswith("sha256:")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: RuleTestCase, ruleset: RuleSet, directory: Directory) -> None:
    [result] = run_rule_tests([case], ruleset, directory, ChinaWorkCalendar())
    assert result.passed, str(result)


def test_a_wrong_expectation_fails(ruleset: RuleSet, directory: Directory) -> None:
    """Guard the runner itself: a case expecting the wrong recipient must fail, naming the difference."""
    case = CASES[0]
    wrong = RuleTestCase(
        case.name, case.file, case.line, case.document, {"routes": [{"recipient": "police-songjiang"}]}
    )
    [result] = run_rule_tests([wrong], ruleset, directory, ChinaWorkCalendar())
    assert not result.passed
    assert any("recipients: expected ['police-songjiang']" in f for f in result.failures)
