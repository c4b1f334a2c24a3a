"""School connector: screening export in -> expected referral Bundles out (golden), bad rows reported."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from connectors.common import golden
from connectors.school.connector import CONNECTOR
from connectors.school.generate import rows, write
from connectors.school.screening import load_config, parse_rows

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "school" / "samples"
SCHOOL = "school-songjiang-no2-middle"


def _parse(table: list[dict[str, str]]):  # type: ignore[no-untyped-def]
    ctx = golden.read_context(SCHOOL, "school")
    return parse_rows(
        table, sender=ctx.sender, directory=ctx.directory, pseudonymise=ctx.pseudonymise, today=golden.TODAY
    )


def _row(**overrides: str) -> dict[str, str]:
    base = {
        "student_no": "G310117201203059915",
        "name": "王小雨",
        "gender": "女",
        "birth": "2012-03-05",
        "school": "松江二中（初中部）",
        "grade": "初二",
        "town": "岳阳街道",
        "scale": "PHQ-9",
        "date": "2026-11-20",
        "consent": "是",
        "assent": "是",
        "guardian_name": "王芳",
        "guardian_phone": "138-0000-0001",
        "guardian_relationship": "母亲",
    }
    base.update(overrides)
    return base


def _items(*scores: int) -> dict[str, str]:
    return {f"q{k}": str(v) for k, v in enumerate(scores, start=1)}


def test_golden_csv_export_with_malformed_rows() -> None:
    document = golden.check(CONNECTOR, SAMPLES / "screening-2026-11-20.csv", SCHOOL)
    bad = {(b["row"], b["field"]) for b in document["bad_rows"]}
    assert bad == {
        (62, "学号"),
        (63, "学号"),
        (64, "出生日期"),
        (65, "街镇"),
        (66, "题3"),
        (67, "总分"),
        (68, "学校"),
        (70, "标记"),
    }
    assert document["skipped"]["scale MHT not scored"] == 1
    assert document["records"], "the good rows still produce referrals"


def test_golden_xlsx_export_with_english_headers() -> None:
    document = golden.check(CONNECTOR, SAMPLES / "screening-2026-11-20-en.xlsx", SCHOOL)
    assert document["rows"] == 40
    assert document["bad_rows"] == []


def test_thousand_row_sample_is_reproducible(tmp_path: Path) -> None:
    made = tmp_path / "again.csv"
    write(made, list(rows(1000, SCHOOL, seed=7)))
    assert made.read_bytes() == (SAMPLES / "screening-1000.csv").read_bytes()
    with made.open(encoding="utf-8-sig") as handle:
        assert sum(1 for _ in csv.reader(handle)) == 1001


@pytest.mark.parametrize(
    ("items", "flags", "risk", "reasons"),
    [
        ((1, 1, 1, 1, 1, 1, 1, 1, 0), "", None, None),  # PHQ-9 8: below the threshold
        ((2, 2, 2, 1, 1, 1, 1, 1, 0), "", None, None),  # 11: level 1 stays with the school
        ((2, 2, 2, 2, 2, 2, 2, 1, 0), "", 2, ("screening-positive",)),  # 15
        ((3, 3, 3, 3, 2, 2, 2, 2, 0), "", 3, ("screening-positive",)),  # 20
        ((0, 0, 0, 0, 0, 0, 0, 0, 1), "", 3, ("screening-positive", "suicidal-ideation")),  # item 9 = 1
        ((0, 0, 0, 0, 0, 0, 0, 0, 2), "", 4, ("screening-positive", "suicidal-ideation")),  # item 9 = 2
        ((1, 0, 0, 0, 0, 0, 0, 0, 0), "自伤", 3, ("screening-positive", "self-harm")),
        ((1, 0, 0, 0, 0, 0, 0, 0, 0), "疑似受虐", 2, ("screening-positive", "suspected-abuse-neglect")),
    ],
)
def test_scores_and_flags_decide_referral_and_risk(
    items: tuple[int, ...], flags: str, risk: int | None, reasons: tuple[str, ...] | None
) -> None:
    parsed = _parse([_row(flags=flags, **_items(*items))])
    if risk is None:
        assert parsed.items == []
        assert parsed.skipped == {"below the referral threshold": 1}
        return
    [item] = parsed.items
    assert item.draft.risk_level == risk
    assert item.draft.reasons == reasons


def test_one_referral_per_student_with_both_scales() -> None:
    parsed = _parse(
        [
            _row(**_items(2, 2, 2, 2, 2, 2, 2, 1, 0)),
            _row(scale="GAD-7", **_items(3, 3, 3, 2, 2, 2, 1)),
        ]
    )
    [item] = parsed.items
    assert item.rows == (2, 3)
    assert {s.scale.value for s in item.draft.scores} == {"phq-9", "gad-7"}


def test_answer_texts_score_like_numbers() -> None:
    texts = {f"q{k}": "几乎每天" for k in range(1, 8)} | {"q8": "完全不会", "q9": "完全不会"}
    [item] = _parse([_row(**texts)]).items
    assert item.draft.scores[0].items == (3, 3, 3, 3, 3, 3, 3, 0, 0)


def test_without_consent_high_risk_is_held_and_crisis_goes_on_emergency_basis() -> None:
    held = _parse([_row(consent="否", **_items(3, 3, 3, 3, 2, 2, 2, 2, 0))])
    assert held.items == []
    assert held.held[0].field == "监护人同意"
    [crisis] = _parse([_row(consent="否", **_items(0, 0, 0, 0, 0, 0, 0, 0, 3))]).items
    assert crisis.draft.legal_basis == "emergency"
    assert crisis.draft.emergency_reason == load_config().emergency_reason
    assert crisis.draft.consent is None


def test_fourteen_and_over_need_their_own_assent() -> None:
    parsed = _parse([_row(birth="2011-01-01", assent="", **_items(3, 3, 3, 3, 2, 2, 2, 2, 0))])
    assert parsed.items == []
    assert parsed.held[0].field == "学生同意"


def test_register_number_and_resident_id_give_the_same_pseudonym() -> None:
    a = _parse([_row(**_items(3, 3, 3, 3, 2, 2, 2, 2, 0))]).items[0]
    b = _parse([_row(student_no="310117201203059915", **_items(3, 3, 3, 3, 2, 2, 2, 2, 0))]).items[0]
    assert a.draft.student.pseudonym == b.draft.student.pseudonym
    assert a.record_id == b.record_id  # the same screening of the same child: the hub sees it once


def test_record_ids_and_bundles_hold_no_raw_identifier() -> None:
    [item] = _parse([_row(**_items(3, 3, 3, 3, 2, 2, 2, 2, 0))]).items
    from connectors.common.bundle import build_referral, encode

    body = encode(build_referral(item.draft, golden.AUTHORED)).decode()
    assert "310117201203059915" not in body
    assert "310117201203059915" not in item.record_id
