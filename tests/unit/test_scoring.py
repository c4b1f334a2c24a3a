"""PHQ-9 and GAD-7 scoring, bands, item 9 and the default risk-level suggestion (DESIGN §6)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.scoring import (
    GAD7,
    PHQ9,
    Scale,
    read_observation,
    read_questionnaire_response,
    scale_of_questionnaire,
    score,
    suggest_risk,
)

LOINC = "http://loinc.org"


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "moderately-severe"),
        (19, "moderately-severe"),
        (20, "severe"),
        (27, "severe"),
    ],
)
def test_phq9_bands(total: int, band: str) -> None:
    assert PHQ9.band(total).code == band


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "severe"),
        (21, "severe"),
    ],
)
def test_gad7_bands(total: int, band: str) -> None:
    assert GAD7.band(total).code == band


def test_band_outside_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        PHQ9.band(28)


def test_phq9_total_item9_and_safety_flag() -> None:
    r = score("phq-9", [3, 3, 2, 2, 2, 2, 2, 2, 1])
    assert (r.complete, r.total, r.band and r.band.code, r.item9) == (True, 19, "moderately-severe", 1)
    assert r.safety_assessment_due
    assert not score(Scale.PHQ9, [3] * 8 + [0]).safety_assessment_due


def test_stated_total_is_checked_against_complete_items() -> None:
    assert score("phq-9", [1] * 9, stated_total=9).total_mismatch is False
    assert score("phq-9", [1] * 9, stated_total=10).total_mismatch is True
    partial = score("phq-9", {"44260-8": 2}, stated_total=12)
    assert (partial.complete, partial.total, partial.total_mismatch) == (False, 12, False)


def test_gad7_has_no_item9() -> None:
    r = score("gad-7", [3, 3, 3, 3, 3, 3, 3])
    assert (r.total, r.item9, r.safety_assessment_due) == (21, None, False)


PHQ = Scale.PHQ9
GAD = Scale.GAD7


@pytest.mark.parametrize(
    ("results", "reasons", "level"),
    [
        ([], [], None),
        ([(PHQ, [0] * 8 + [2])], [], 4),  # item 9 >= 2
        ([], ["crisis-call"], 4),  # hotline crisis call
        ([(PHQ, [3, 3, 3, 3, 3, 3, 2, 0, 0])], [], 3),  # PHQ-9 20
        ([(PHQ, [0] * 8 + [1])], [], 3),  # item 9 = 1
        ([], ["self-harm"], 3),  # recent self-harm
        ([(PHQ, [2, 2, 2, 2, 2, 2, 2, 1, 0])], [], 2),  # PHQ-9 15
        ([(GAD, [3, 3, 3, 2, 2, 1, 1])], [], 2),  # GAD-7 15
        ([(PHQ, [2, 2, 2, 2, 2, 0, 0, 0, 0])], [], 1),  # PHQ-9 10
        ([(GAD, [2, 2, 2, 2, 2, 0, 0])], [], 1),  # GAD-7 10
        ([(PHQ, [1] * 8 + [0]), (GAD, [1] * 7)], ["bullying"], None),  # 8 and 7: below level 1
        ([(PHQ, [2, 2, 2, 2, 2, 2, 2, 1, 0]), (GAD, [3] * 7)], [], 2),  # highest applies
    ],
)
def test_default_risk_mapping(
    results: list[tuple[Scale, list[int]]], reasons: list[str], level: int | None
) -> None:
    assert suggest_risk([score(s, items) for s, items in results], reasons) == level


def _component(code: str, value: int) -> dict[str, Any]:
    return {"code": {"coding": [{"system": LOINC, "code": code}]}, "valueInteger": value}


def test_read_observation_with_items_and_mismatching_total() -> None:
    obs = {
        "code": {"coding": [{"system": LOINC, "code": "44261-6"}]},
        "valueInteger": 5,
        "component": [_component(c, 1) for c in PHQ9.items],
    }
    result, problems = read_observation(obs, PHQ9)
    assert result.total == 9
    assert problems == [("", "score-total", "phq-9 stated total 5 differs from the item sum 9")]


def test_read_observation_rejects_unknown_components_and_ranges() -> None:
    obs = {
        "code": {"coding": [{"system": LOINC, "code": "44261-6"}]},
        "valueInteger": 12,
        "component": [_component("12345-6", 1), _component("44260-8", 5)],
    }
    _, problems = read_observation(obs, PHQ9)
    assert [(p, r) for p, r, _ in problems] == [
        ("component[0].code", "code-unknown"),
        ("component[1].valueInteger", "score-range"),
    ]


def test_read_questionnaire_response_with_loinc_answers_and_ordinal_values() -> None:
    answers = {0: "LA6568-5", 1: "LA6569-3", 2: "LA6570-1", 3: "LA6571-9"}
    items: list[dict[str, Any]] = [
        {"linkId": code, "answer": [{"valueCoding": {"system": LOINC, "code": answers[v]}}]}
        for code, v in zip(GAD7.items[:6], [3, 2, 1, 0, 3, 2], strict=True)
    ]
    ordinal = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
    items.append(
        {
            "linkId": "grp",
            "item": [
                {
                    "linkId": GAD7.items[6],
                    "answer": [
                        {"valueCoding": {"code": "x", "extension": [{"url": ordinal, "valueDecimal": 2}]}}
                    ],
                }
            ],
        }
    )
    result, problems = read_questionnaire_response({"item": items}, GAD7)
    assert problems == []
    assert (result.total, result.band and result.band.code) == (13, "moderate")


@pytest.mark.parametrize(
    ("canonical", "spec"),
    [
        ("http://loinc.org/q/44249-1", PHQ9),
        ("http://loinc.org/q/69737-5|2.72", GAD7),
        ("http://example.org/Questionnaire/mht", None),
        (None, None),
    ],
)
def test_scale_of_questionnaire(canonical: str | None, spec: object) -> None:
    assert scale_of_questionnaire(canonical) is spec
