"""CEL conditions: the static checker, compiled evaluation, and the memo agreeing with celpy itself."""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import celpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.adapters.directory import load_directory
from hub.adapters.rules import CelCompiler, CelCondition, check_ruleset
from hub.domain.routing import FACT_FIELDS, REFERRAL_REASONS, ConditionError

ROOT = Path(__file__).resolve().parents[2]
DIRECTORY = load_directory(ROOT / "routing_rules" / "directory" / "songjiang.yaml")
COMPILER = CelCompiler(DIRECTORY)
CST = timezone(timedelta(hours=8))


@pytest.mark.parametrize(
    "source",
    [
        "risk_level >= 3 && has_consent",
        '"self-harm" in reasons || reasons.exists(r, r == "suicidal-ideation")',
        'source_type in ["school", "street-centre"] && town != null',
        "age != null && age < 14",
        "size(declined_by) > 0 && !office_hours",
        'consent_purposes.all(p, p != "investigation") ? working_day : hour >= 8',
        'school != null && school.startsWith("school-")',
        'reasons.filter(r, r.endsWith("harm")).size() == 1',
    ],
)
def test_valid_conditions_compile(source: str) -> None:
    condition, errors = COMPILER.compile(source)
    assert errors == []
    assert isinstance(condition, CelCondition)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('risk_level == "3"', "'==' cannot compare int with string"),
        ("risk_level > 2.5", "'>' cannot order int and double"),
        ("has_consent && age", "'&&' needs bool operands, got int"),
        ("reasons.exists(r, r == 3)", "'==' cannot compare string with int"),
        ('"self_harm" in reasons', "unknown referral-reason code 'self_harm' (did you mean 'self-harm'?)"),
        ('town == "songjiang"', "unknown town code 'songjiang'"),
        ("risk_level == null", "'==' compares int with null, but it is never null"),
        ("lower(town) == 'x'", "unknown function 'lower'"),
        ("reasons.size", "list<string> has no field 'size' (the facts object is flat)"),
        ("hour + 1", "the condition must be a bool, it is int"),
        ("facts.risk_level > 1", "unknown field 'facts'"),
    ],
)
def test_type_errors_and_unknown_codes_are_found_before_any_referral(source: str, message: str) -> None:
    condition, errors = COMPILER.compile(source)
    assert condition is None
    assert any(e.message.startswith(message) for e in errors), [e.message for e in errors]


def test_syntax_errors_carry_line_and_column() -> None:
    _, errors = COMPILER.compile("has_consent\n  && risk_level > > 2")
    assert (errors[0].line, errors[0].column) == (2, 19)
    assert errors[0].message == "CEL syntax error at column 19: unexpected '>'"


def test_a_condition_reads_only_the_facts_it_names() -> None:
    condition, _ = COMPILER.compile('age != null && age < 14 && "treatment" in consent_purposes')
    assert condition is not None
    assert condition.fields == frozenset({"age", "consent_purposes"})


def test_evaluation_errors_become_condition_errors() -> None:
    condition, _ = COMPILER.compile("age < 14")  # valid: age may be null at run time
    assert condition is not None
    assert condition.evaluate({"age": 12}) is True
    with pytest.raises(ConditionError, match="no such overload"):
        condition.evaluate({"age": None})


def _celpy_reference(source: str, facts: dict[str, Any]) -> Any:
    """Evaluate with celpy's own interpreter and a full context: the ground truth for our shortcut."""
    env = celpy.Environment()
    program = env.program(env.compile(source))
    try:
        return bool(
            program.evaluate(
                {k: celpy.json_to_cel(list(v) if isinstance(v, tuple) else v) for k, v in facts.items()}
            )
        )
    except celpy.CELEvalError:
        return "error"


CODES = sorted(REFERRAL_REASONS)
FACTS = st.fixed_dictionaries(
    {
        "risk_level": st.integers(1, 4),
        "reasons": st.lists(st.sampled_from(CODES), min_size=1, max_size=3).map(tuple),
        "age": st.none() | st.integers(6, 18),
        "has_consent": st.booleans(),
        "consent_recipients": st.lists(
            st.sampled_from(["camhs", "district-centre", "school"]), max_size=2
        ).map(tuple),
        "consent_purposes": st.lists(st.sampled_from(["treatment", "follow-up"]), max_size=2).map(tuple),
        "office_hours": st.booleans(),
        "hour": st.integers(0, 23),
        "source_type": st.sampled_from(["school", "police", "camhs", "district-centre"]),
    }
)
SOURCES = [
    'has_consent && "camhs" in consent_recipients && "treatment" in consent_purposes',
    "age != null && age < 14",
    "age < 14",
    '!office_hours || reasons.exists(r, r == "self-harm")',
    'size(reasons) > 1 && source_type != "camhs" && hour >= 8',
]
CONDITIONS = [COMPILER.compile(s)[0] for s in SOURCES]


@settings(max_examples=60, deadline=None)
@given(facts=FACTS)
def test_compiled_memoised_evaluation_agrees_with_celpys_interpreter(facts: dict[str, Any]) -> None:
    for source, condition in zip(SOURCES, CONDITIONS, strict=True):
        assert condition is not None
        expected = _celpy_reference(source, facts)
        for _ in range(2):  # the second call is answered by the memo
            try:
                got: Any = condition.evaluate(facts)
            except ConditionError:
                got = "error"
            assert got == expected, source


def test_every_shipped_condition_only_names_documented_facts() -> None:
    ruleset, _ = check_ruleset(ROOT / "routing_rules", DIRECTORY)
    assert ruleset is not None
    documented = {f.name for f in FACT_FIELDS}
    for rule in ruleset.rules:
        if rule.when is not None:
            assert rule.when.fields <= documented
