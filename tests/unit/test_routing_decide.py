"""The pure decision: priority and stop, fallback, declines, dedupe, explanation, index, version hash."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.directory import Directory, DutySlot, Organisation, Town
from hub.domain.error import InvalidInput
from hub.domain.routing import (
    ConditionError,
    Deadline,
    Match,
    Origin,
    RecipientSpec,
    RouteAction,
    Rule,
    RuleFacts,
    RuleSet,
    Sla,
    decide,
    find_shadowed,
    iter_bits,
    routes_to_add,
    rule_facts,
)
from schemas.envelope import ConsentSummary, ReferralFacts

CST = timezone(timedelta(hours=8))
MONDAY_10 = datetime(2026, 11, 30, 10, 0, tzinfo=CST)


@dataclass
class FakeCondition:
    """An in-memory condition: the domain never sees the expression language."""

    source: str
    fn: Callable[[Mapping[str, Any]], bool]
    fields: frozenset[str] = frozenset()

    def evaluate(self, facts: Mapping[str, Any]) -> bool:
        return self.fn(facts)


def _directory() -> Directory:
    return Directory(
        towns=(Town("yueyang", "岳阳街道", "Yueyang", "street"), Town("sijing", "泗泾镇", "Sijing", "town")),
        organisations=(
            Organisation(
                "district-centre",
                "district-centre",
                "区中心",
                "District centre",
                district_wide=True,
                queues=("triage",),
            ),
            Organisation(
                "camhs-a",
                "camhs",
                "甲",
                "A",
                district_wide=True,
                on_duty=(DutySlot(days=frozenset({1, 2, 3, 4, 5}), start=time(8), end=time(17)),),
            ),
            Organisation(
                "camhs-b", "camhs", "乙", "B", district_wide=True, on_duty=(DutySlot(days=frozenset({6, 7})),)
            ),
            Organisation(
                "street-centre-yueyang", "street-centre", "岳阳中心", "Yueyang centre", towns=("yueyang",)
            ),
            Organisation(
                "street-centre-sijing", "street-centre", "泗泾中心", "Sijing centre", towns=("sijing",)
            ),
            Organisation("school-1", "school", "一中", "No. 1", towns=("yueyang",)),
            Organisation("police", "police", "公安", "Police", district_wide=True),
        ),
    )


DIRECTORY = _directory()
FALLBACK = RouteAction(
    to=(RecipientSpec(agency="district-centre"),),
    purpose="follow-up",
    legal_basis="consent",
    queue="triage",
    sla=Sla(acknowledge=Deadline.parse("1wd")),
)


def _action(*to: RecipientSpec, role: str = "primary", purpose: str = "treatment") -> RouteAction:
    return RouteAction(to=to, purpose=purpose, legal_basis="consent", role=role)


def _facts(**overrides: Any) -> RuleFacts:
    base: dict[str, Any] = {
        "source_org": "school-1",
        "source_type": "school",
        "reasons": ["self-harm"],
        "risk_level": 3,
        "priority": "urgent",
        "age": 13,
        "town": "yueyang",
        "school": "school-1",
    }
    now = overrides.pop("now", MONDAY_10)
    declined = overrides.pop("declined_by", ())
    base.update(overrides)
    return rule_facts(
        ReferralFacts.model_validate(base),
        now=now,
        working_day=True,
        declined_by=declined,
        directory=DIRECTORY,
    )


def _rule(
    rule_id: str,
    *routes: RouteAction,
    priority: int = 0,
    stop: bool = False,
    when: Any = None,
    line: int = 1,
    **match: list[Any],
) -> Rule:
    return Rule(rule_id, routes, priority, Match.of(**match), when, stop, origin=Origin("r.yaml", line))


def test_rules_run_in_priority_order_until_one_stops() -> None:
    rules = RuleSet.build(
        [
            _rule("low", _action(RecipientSpec(agency="street-centre")), priority=1, line=3, risk_level=[3]),
            _rule(
                "high", _action(RecipientSpec(agency="camhs")), priority=9, stop=True, line=9, risk_level=[3]
            ),
        ],
        FALLBACK,
    )
    decision = decide(_facts(), rules, DIRECTORY)
    assert [r.recipient for r in decision.routes] == ["camhs-a"]
    assert decision.matched
    assert not decision.fallback
    traces = {t.rule_id: t for t in decision.explanation}
    assert traces["high"].outcome == "matched"
    assert traces["low"].outcome == "not-evaluated"
    assert traces["low"].reason == "stopped by high (r.yaml:9)"


def test_no_match_goes_to_the_district_centre_triage_queue_marked_fallback() -> None:
    rules = RuleSet.build([_rule("crisis", _action(RecipientSpec(agency="camhs")), risk_level=[4])], FALLBACK)
    decision = decide(_facts(), rules, DIRECTORY)
    assert not decision.matched
    assert decision.fallback
    [route] = decision.routes
    assert (route.recipient, route.queue, route.rule_id, route.fallback) == (
        "district-centre",
        "triage",
        "fallback",
        True,
    )
    assert route.ack == Deadline(timedelta(days=1), working_days=True)
    assert decision.explanation[0].reason == "match.risk_level: 3 not in [4]"
    assert decision.notes == ("no rule matched",)


def test_a_condition_that_cannot_be_evaluated_is_an_error_outcome_not_a_crash() -> None:
    def boom(_: Mapping[str, Any]) -> bool:
        raise ConditionError("no such overload: int < null")

    rules = RuleSet.build(
        [_rule("young", _action(RecipientSpec(agency="camhs")), when=FakeCondition("age < 14", boom))],
        FALLBACK,
    )
    decision = decide(_facts(age=None), rules, DIRECTORY)
    assert decision.explanation[0].outcome == "error"
    assert "no such overload" in decision.explanation[0].reason
    assert decision.fallback


def test_when_false_is_explained_with_its_source() -> None:
    cond = FakeCondition("has_consent", lambda f: bool(f["has_consent"]), frozenset({"has_consent"}))
    rules = RuleSet.build([_rule("consented", _action(RecipientSpec(agency="camhs")), when=cond)], FALLBACK)
    decision = decide(_facts(), rules, DIRECTORY)
    assert decision.explanation[0].reason == "when is false: has_consent"


def test_a_declined_recipient_passes_the_referral_to_the_next_of_its_pathway() -> None:
    rules = RuleSet.build([_rule("green", _action(RecipientSpec(agency="camhs")))], FALLBACK)
    first = decide(_facts(), rules, DIRECTORY)
    assert first.routes[0].recipient == "camhs-a"
    again = decide(_facts(declined_by=["camhs-a"]), rules, DIRECTORY)
    [route] = again.routes
    assert (route.recipient, route.pathway_step, route.skipped) == ("camhs-b", 1, ("camhs-a",))
    assert routes_to_add(again, delivered=["camhs-a"]) == (route,)


def test_when_everyone_on_the_pathway_declined_the_back_stop_takes_it() -> None:
    rules = RuleSet.build([_rule("green", _action(RecipientSpec(agency="camhs")))], FALLBACK)
    decision = decide(_facts(declined_by=["camhs-a", "camhs-b"]), rules, DIRECTORY)
    assert decision.matched
    assert decision.fallback
    assert [r.recipient for r in decision.routes] == ["district-centre"]
    assert "green: every recipient of the pathway declined (camhs-a, camhs-b)" in decision.notes


def test_on_duty_resolution_follows_the_rota() -> None:
    rules = RuleSet.build([_rule("crisis", _action(RecipientSpec(agency="camhs", on_duty=True)))], FALLBACK)
    saturday = datetime(2026, 12, 5, 10, 0, tzinfo=CST)
    assert decide(_facts(now=MONDAY_10), rules, DIRECTORY).routes[0].recipient == "camhs-a"
    assert decide(_facts(now=saturday), rules, DIRECTORY).routes[0].recipient == "camhs-b"
    # Monday 20:00: nobody on duty; directory order, and the explanation says so.
    night = decide(_facts(now=MONDAY_10.replace(hour=20)), rules, DIRECTORY)
    assert night.routes[0].recipient == "camhs-a"
    assert "no camhs on duty" in night.explanation[0].reason


def test_a_recipient_gets_one_route_and_a_primary_beats_a_copy() -> None:
    rules = RuleSet.build(
        [
            _rule("copy-first", _action(RecipientSpec(org="police"), role="copy"), priority=9),
            _rule("primary-later", _action(RecipientSpec(org="police")), priority=5),
            _rule("again", _action(RecipientSpec(org="police"), purpose="follow-up"), priority=1),
        ],
        FALLBACK,
    )
    decision = decide(_facts(), rules, DIRECTORY)
    [route] = decision.routes
    assert (route.role, route.rule_id) == ("primary", "primary-later")
    assert "police already routed by primary-later" in decision.explanation[2].reason


def test_a_referral_is_never_routed_back_to_its_sender() -> None:
    rules = RuleSet.build([_rule("to-school", _action(RecipientSpec(agency="school")))], FALLBACK)
    decision = decide(_facts(), rules, DIRECTORY)  # the school itself sent it
    assert "is the sender itself" in decision.explanation[0].reason
    assert decision.fallback  # nothing else placed it


def test_town_scoped_recipients_need_the_students_town() -> None:
    rules = RuleSet.build([_rule("town", _action(RecipientSpec(agency="street-centre")))], FALLBACK)
    assert decide(_facts(town="sijing"), rules, DIRECTORY).routes[0].recipient == "street-centre-sijing"
    unknown = decide(_facts(town=None), rules, DIRECTORY)
    assert unknown.matched
    assert unknown.fallback
    assert unknown.notes == ("no primary recipient could be resolved", "town: the student's town is unknown")


def test_candidates_explanation_leaves_out_what_the_index_excluded_but_routes_the_same() -> None:
    rules = RuleSet.build(
        [_rule(f"r{i}", _action(RecipientSpec(agency="camhs")), risk_level=[i % 4 + 1]) for i in range(40)],
        FALLBACK,
    )
    full = decide(_facts(), rules, DIRECTORY)
    short = decide(_facts(), rules, DIRECTORY, explain="candidates")
    assert full.routes == short.routes
    assert len(full.explanation) == 40
    assert len(short.explanation) == 10
    assert short.unexplained == 30


RISKS = st.lists(st.integers(1, 4), min_size=1, max_size=2)
REASONS = st.lists(
    st.sampled_from(["self-harm", "bullying", "case-support", "family-crisis"]), min_size=1, max_size=2
)
SOURCES = st.lists(st.sampled_from(["school", "police", "camhs"]), min_size=1, max_size=2)


@st.composite
def matches(draw: st.DrawFn) -> dict[str, list[Any]]:
    keys: dict[str, list[Any]] = {}
    if draw(st.booleans()):
        keys["risk_level"] = draw(RISKS)
    if draw(st.booleans()):
        keys["reasons"] = draw(REASONS)
    if draw(st.booleans()):
        keys["source_type"] = draw(SOURCES)
    if draw(st.booleans()):
        keys["has_consent"] = [draw(st.booleans())]
    return keys


@settings(max_examples=150, deadline=None)
@given(
    rules=st.lists(matches(), min_size=1, max_size=30),
    risk=st.integers(1, 4),
    reasons=REASONS,
    source=st.sampled_from(["school", "police", "camhs"]),
    consent=st.booleans(),
)
def test_the_index_finds_exactly_the_rules_whose_match_keys_hold(
    rules: list[dict[str, list[Any]]], risk: int, reasons: list[str], source: str, consent: bool
) -> None:
    built = RuleSet.build(
        [
            Rule(f"r{i}", (_action(RecipientSpec(agency="camhs")),), match=Match.of(**m))
            for i, m in enumerate(rules)
        ],
        FALLBACK,
    )
    consents = [ConsentSummary(consent_id="c", status="active", grantor="guardian")] if consent else []
    facts = _facts(risk_level=risk, reasons=reasons, source_type=source, consents=consents)
    via_index = set(iter_bits(built.index.candidates(facts.mapping)))
    brute = {i for i, r in enumerate(built.rules) if r.match.why_not(facts.mapping) is None}
    assert via_index == brute


def test_the_version_hashes_meaning_not_layout() -> None:
    a = _rule("r", _action(RecipientSpec(agency="camhs")), risk_level=[3], line=1)
    moved = Rule(
        a.id, a.routes, a.priority, a.match, description={"en": "reworded"}, origin=Origin("other.yaml", 77)
    )
    changed = _rule("r", _action(RecipientSpec(agency="camhs")), risk_level=[3, 4])
    v = RuleSet.build([a], FALLBACK).version
    assert v == RuleSet.build([moved], FALLBACK).version
    assert v != RuleSet.build([changed], FALLBACK).version
    assert len(v) == len("sha256:") + 64


def test_shadowing_is_found_only_where_provable() -> None:
    broad = _rule("broad", _action(RecipientSpec(agency="camhs")), priority=9, stop=True, risk_level=[3, 4])
    narrow = _rule("narrow", _action(RecipientSpec(agency="police")), risk_level=[4], reasons=["self-harm"])
    other = _rule("other", _action(RecipientSpec(agency="police")), reasons=["self-harm"])
    conditional = _rule(
        "cond",
        _action(RecipientSpec(agency="camhs")),
        priority=9,
        stop=True,
        when=FakeCondition("x", lambda f: True),
        risk_level=[3, 4],
    )
    assert [
        (s.id, b.id) for s, b in find_shadowed(RuleSet.build([broad, narrow, other], FALLBACK).rules)
    ] == [("narrow", "broad")]
    assert find_shadowed(RuleSet.build([conditional, narrow], FALLBACK).rules) == []


def test_rule_facts_from_a_referral() -> None:
    consents = [
        ConsentSummary(
            consent_id="a",
            status="active",
            grantor="guardian",
            recipients=["camhs-a"],
            purposes=["treatment"],
            start=MONDAY_10 - timedelta(days=1),
        ),
        ConsentSummary(
            consent_id="b",
            status="active",
            grantor="guardian",
            recipients=["police"],
            purposes=["investigation"],
            end=MONDAY_10 - timedelta(hours=1),
        ),
        ConsentSummary(consent_id="c", status="inactive", grantor="guardian", recipients=["school"]),
    ]
    facts = _facts(consents=consents, declined_by=["camhs-a"], now=datetime(2026, 11, 30, 1, 30, tzinfo=UTC))
    assert facts.has_consent
    assert not facts.student_assent
    assert facts.consent_recipients == ("camhs-a", "camhs")  # an organisation adds its type
    assert facts.consent_purposes == ("treatment",)  # the expired and the revoked consents do not count
    assert (facts.hour, facts.weekday, facts.office_hours) == (9, 1, True)  # 09:30 in Shanghai
    assert (facts.declined_types, facts.rerouted) == (("camhs",), True)


def test_rule_facts_need_an_aware_time() -> None:
    with pytest.raises(InvalidInput):
        _facts(now=datetime(2026, 11, 30, 10, 0))


@pytest.mark.parametrize(
    ("text", "amount", "working"),
    [
        ("30m", timedelta(minutes=30), False),
        ("2h", timedelta(hours=2), False),
        ("7d", timedelta(days=7), False),
        ("3wd", timedelta(days=3), True),
    ],
)
def test_deadlines_parse_and_print_back(text: str, amount: timedelta, working: bool) -> None:
    deadline = Deadline.parse(text)
    assert (deadline.amount, deadline.working_days, str(deadline)) == (amount, working, text)


@pytest.mark.parametrize("text", ["", "0h", "3 weeks", "-1d", "1.5h"])
def test_bad_deadlines_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        Deadline.parse(text)
