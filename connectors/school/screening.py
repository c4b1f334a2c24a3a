"""A screening platform's export (one row per student and scale) -> scored students -> referral drafts.

Pure apart from reading the file: pseudonyms come from an injected function, times from ``today``.
A malformed row is reported with its row number and column and left out; the student's other rows
still count. Students are grouped by (student number, screening date): one referral per student per
screening, whatever number of scales it holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import yaml

from connectors.common.bundle import ConsentGrant, Guardian, Org, ReferralDraft, ScaleScore, Student
from connectors.common.directory import Directory
from connectors.common.record import BadRow, Item, Parsed, record_id
from connectors.common.table import Columns, Row, read_table
from connectors.common.value import (
    SHANGHAI,
    ValueProblem,
    birth_year_month,
    gender,
    local_date,
    person_name,
    phone,
    relationship,
    text,
    town,
    yes_no,
)
from hub.domain.error import HubError
from schemas.profile import age_at
from schemas.scoring import SPECS, RiskMapping, Scale, ScaleResult, score, suggest_risk

CONFIG = Path(__file__).with_name("config.yaml")
Pseudonymise = Callable[[str, str], str]  # (raw student id, issuing organisation) -> pseudonym

COLUMNS = Columns(
    {
        "student_no": ["学号", "学籍号", "学生编号", "student no", "student number", "student id"],
        "name": ["姓名", "学生姓名", "name", "student name"],
        "gender": ["性别", "gender", "sex"],
        "birth": ["出生日期", "出生年月", "birth date", "date of birth", "dob"],
        "school": ["学校", "学校名称", "school"],
        "grade": ["年级", "grade"],
        "class": ["班级", "class"],
        "town": ["街镇", "所在街镇", "居住街镇", "town", "street/town"],
        "scale": ["量表", "量表名称", "scale"],
        **{f"q{k}": [f"题{k}", f"第{k}题", f"Q{k}", f"item{k}", f"item {k}"] for k in range(1, 10)},
        "total": ["总分", "total", "total score"],
        "flags": ["标记", "预警标记", "flags", "flag"],
        "date": ["测评日期", "测评时间", "完成时间", "筛查日期", "screening date", "date"],
        "consent": ["监护人同意", "家长同意", "guardian consent", "consent"],
        "consent_date": ["同意日期", "监护人同意日期", "consent date"],
        "assent": ["学生同意", "本人同意", "student assent"],
        "guardian_name": ["监护人姓名", "家长姓名", "guardian name"],
        "guardian_phone": ["监护人电话", "家长电话", "联系电话", "guardian phone"],
        "guardian_relationship": ["监护人关系", "与学生关系", "guardian relationship"],
    },
    required=("student_no", "name", "gender", "birth", "town", "scale", "date"),
)
HEADERS_ZH = {
    "student_no": "学号",
    "name": "姓名",
    "gender": "性别",
    "birth": "出生日期",
    "school": "学校",
    "grade": "年级",
    "class": "班级",
    "town": "街镇",
    "scale": "量表",
    **{f"q{k}": f"题{k}" for k in range(1, 10)},
    "total": "总分",
    "flags": "标记",
    "date": "测评日期",
    "consent": "监护人同意",
    "consent_date": "同意日期",
    "assent": "学生同意",
    "guardian_name": "监护人姓名",
    "guardian_phone": "监护人电话",
    "guardian_relationship": "监护人关系",
}


@dataclass(frozen=True)
class Config:
    mapping: RiskMapping
    min_risk_level: int
    always_refer: frozenset[str]
    min_risk_for_reason: Mapping[str, int]
    without_consent: Mapping[int, str]
    emergency_reason: str
    consent_recipients: tuple[str, ...]
    consent_purposes: tuple[str, ...]
    consent_categories: tuple[str, ...]
    consent_months: int
    assent_from_age: int
    flags: Mapping[str, str]
    answers: Mapping[str, int]


def load_config(path: Path | None = None) -> Config:
    raw = yaml.safe_load((path or CONFIG).read_text(encoding="utf-8"))
    referral = raw.get("referral") or {}
    scope = raw.get("consent_scope") or {}
    return Config(
        mapping=RiskMapping(**(raw.get("risk_mapping") or {})),
        min_risk_level=int(referral.get("min_risk_level", 2)),
        always_refer=frozenset(referral.get("always_refer_reasons") or ()),
        min_risk_for_reason={str(k): int(v) for k, v in (referral.get("min_risk_for_reason") or {}).items()},
        without_consent={int(k): str(v) for k, v in (referral.get("without_consent") or {}).items()},
        emergency_reason=str(referral.get("emergency_reason") or "").strip(),
        consent_recipients=tuple(scope.get("recipients") or ()),
        consent_purposes=tuple(scope.get("purposes") or ()),
        consent_categories=tuple(scope.get("categories") or ()),
        consent_months=int(scope.get("months", 6)),
        assent_from_age=int(scope.get("student_assent_from_age", 14)),
        flags={str(k).lower(): str(v) for k, v in (raw.get("flags") or {}).items()},
        answers={str(k).lower(): int(v) for k, v in (raw.get("answers") or {}).items()},
    )


_SCALE_NAMES = {Scale.PHQ9: re.compile(r"phq-?9|抑郁"), Scale.GAD7: re.compile(r"gad-?7|焦虑")}


def scale_of(value: object) -> Scale | None:
    raw = text(value).lower().replace(" ", "")
    for scale, pattern in _SCALE_NAMES.items():
        if pattern.search(raw):
            return scale
    return None


@dataclass
class _Student:
    """What the rows of one student's screening say, merged."""

    first_row: int
    pseudonym: str
    when: date
    row: Row
    rows: list[int] = field(default_factory=list)
    results: dict[Scale, tuple[ScaleResult, tuple[int, ...] | None]] = field(default_factory=dict)
    reasons: set[str] = field(default_factory=set)


class _Reader:
    def __init__(
        self, sender: Org, directory: Directory, pseudonymise: Pseudonymise, config: Config, today: date
    ) -> None:
        self.sender = sender
        self.directory = directory
        self.pseudonymise = pseudonymise
        self.config = config
        self.today = today
        self.parsed = Parsed()
        self.students: dict[tuple[str, date], _Student] = {}

    def bad(self, row: Row, column: str, reason: str) -> None:
        self.parsed.bad.append(BadRow(row.number, HEADERS_ZH.get(column, column), reason))

    def answer(self, value: object, column: str) -> int:
        raw = text(value)
        if raw.lower() in self.config.answers:
            return self.config.answers[raw.lower()]
        try:
            number = int(float(raw))
        except ValueError:
            raise ValueProblem(f"{raw!r} is neither a score 0-3 nor a known answer text") from None
        if not 0 <= number <= 3 or float(raw) != number:
            raise ValueProblem(f"score {raw} is outside 0-3")
        return number

    def read(self, row: Row) -> None:
        # Student identity and the screening it belongs to: without these the row cannot be placed.
        school_text = text(row.get("school"))
        if school_text:
            school = self.directory.find(school_text)
            if school is None:
                return self.bad(row, "school", f"school {school_text!r} is not in the directory")
            if school.id != self.sender.id:
                return self.bad(
                    row, "school", f"a row of {school.id}; this connector submits for {self.sender.id}"
                )
        raw_id = text(row.get("student_no"))
        if not raw_id:
            return self.bad(row, "student_no", "the student number is empty")
        try:
            pseudonym = self.pseudonymise(raw_id, self.sender.id)
        except (ValueError, HubError) as exc:  # PseudonymInvalidId
            return self.bad(row, "student_no", getattr(exc, "message", str(exc)))
        try:
            when = local_date(row.get("date"))
        except ValueProblem as exc:
            return self.bad(row, "date", str(exc))
        if when > self.today:
            return self.bad(row, "date", "the screening date is in the future")
        for column, check in (
            ("name", person_name),
            ("gender", gender),
            ("birth", lambda v: birth_year_month(v, today=self.today)),
            ("town", town),
        ):
            try:
                check(row.get(column))
            except ValueProblem as exc:
                return self.bad(row, column, str(exc))
        for column, check in (("guardian_phone", phone), ("guardian_relationship", relationship)):
            if text(row.get(column)):
                try:
                    check(row.get(column))
                except ValueProblem as exc:
                    return self.bad(row, column, str(exc))
        for column in ("consent", "assent"):
            try:
                yes_no(row.get(column))
            except ValueProblem as exc:
                return self.bad(row, column, str(exc))
        reasons: set[str] = set()
        for flag in re.split(r"[、,，;；/\s]+", text(row.get("flags"))):
            if not flag:
                continue
            reason = self.config.flags.get(flag.lower())
            if reason is None:
                return self.bad(row, "flags", f"flag {flag!r} is not one of the configured flags")
            reasons.add(reason)
        scale = scale_of(row.get("scale"))
        if scale is None:
            self.parsed.skip(f"scale {text(row.get('scale')) or '(empty)'} not scored")
            return None
        spec = SPECS[scale]
        items: list[int] = []
        missing: list[str] = []
        for k in range(1, len(spec.items) + 1):
            value = row.get(f"q{k}")
            if text(value) == "":
                missing.append(f"q{k}")
                continue
            try:
                items.append(self.answer(value, f"q{k}"))
            except ValueProblem as exc:
                return self.bad(row, f"q{k}", str(exc))
        stated: int | None = None
        if text(row.get("total")):
            try:
                stated = int(float(text(row.get("total"))))
                if not 0 <= stated <= spec.total_max:
                    raise ValueProblem(f"{scale.value} total {stated} is outside 0-{spec.total_max}")
            except ValueError as exc:
                return self.bad(row, "total", str(exc) if isinstance(exc, ValueProblem) else "not a number")
        if missing and len(missing) < len(spec.items):
            return self.bad(
                row, missing[0], f"{scale.value}: item {missing[0][1:]} is empty (give all items or none)"
            )
        if missing and stated is None:
            return self.bad(row, "total", f"{scale.value}: neither the items nor the total are given")
        result = score(scale, items if not missing else {}, stated)
        if result.total_mismatch:
            return self.bad(
                row, "total", f"{scale.value} total {stated} differs from the item sum {result.total}"
            )
        key = (pseudonym, when)
        student = self.students.get(key)
        if student is None:
            student = self.students[key] = _Student(row.number, pseudonym, when, row)
        if scale in student.results:
            return self.bad(row, "scale", f"{scale.value} is given twice for this student and date")
        student.rows.append(row.number)
        student.results[scale] = (result, tuple(items) if not missing else None)
        student.reasons |= reasons
        return None

    def draft(self, student: _Student) -> None:
        config = self.config
        results = [r for r, _ in student.results.values()]
        reasons = set(student.reasons)
        if any(r.safety_assessment_due for r in results):
            reasons.add("suicidal-ideation")
        risk = suggest_risk(results, reasons, config.mapping) or 0
        for reason in reasons:
            risk = max(risk, config.min_risk_for_reason.get(reason, 0))
        refer_anyway = bool(reasons & config.always_refer)
        if risk < config.min_risk_level and not refer_anyway:
            self.parsed.skip("below the referral threshold")
            return
        risk = max(risk, 1)
        row = student.row
        consented = yes_no(row.get("consent"))
        birth = birth_year_month(row.get("birth"), today=self.today)
        age = age_at(birth, datetime.combine(student.when, time(12), SHANGHAI))
        assent_missing = (
            consented and age is not None and age >= config.assent_from_age and not yes_no(row.get("assent"))
        )
        legal_basis: str | None = "consent" if consented and not assent_missing else None
        emergency_reason = None
        if legal_basis is None:
            action = config.without_consent.get(risk, "hold")
            if action == "hold":
                column, why = (
                    ("学生同意", f"risk level {risk}: held until the student ({age}) assents as well")
                    if assent_missing
                    else ("监护人同意", f"risk level {risk}: held until the guardian consents")
                )
                self.parsed.held.append(BadRow(student.first_row, column, why))
                return
            if action == "emergency":
                legal_basis, emergency_reason = "emergency", config.emergency_reason
        if risk == 4 and legal_basis is None:
            legal_basis, emergency_reason = "emergency", config.emergency_reason
        if "suspected-abuse-neglect" in reasons and risk < 4:
            legal_basis = "statutory"  # the mandatory report needs no consent
        consent = None
        if consented and not assent_missing:
            try:
                start = local_date(row.get("consent_date")) if text(row.get("consent_date")) else student.when
            except ValueProblem:
                start = student.when
            consent = ConsentGrant(
                config.consent_recipients,
                config.consent_purposes,
                config.consent_categories,
                start,
                _add_months(start, config.consent_months),
                student_assent=yes_no(row.get("assent")),
            )
        guardian = None
        if text(row.get("guardian_name")) or text(row.get("guardian_phone")) or consented:
            guardian = Guardian(
                relationship(row.get("guardian_relationship")),
                person_name(row.get("guardian_name")) if text(row.get("guardian_name")) else None,
                phone(row.get("guardian_phone")) if text(row.get("guardian_phone")) else None,
            )
        effective = datetime.combine(student.when, time(0), SHANGHAI)
        scores = tuple(
            ScaleScore(scale, items, result.stated_total if items is None else None, effective)
            for scale, (result, items) in sorted(student.results.items())
        )
        ordered = ["screening-positive", *sorted(reasons - {"screening-positive"}, key=_REASON_ORDER.index)]
        student_record = Student(
            pseudonym=student.pseudonym,
            birth=birth,
            gender=gender(row.get("gender")),
            town=town(row.get("town")),
            name=person_name(row.get("name")),
            school=self.sender.id,
            grade=text(row.get("grade")) or None,
        )
        rid = record_id(self.sender.id, student.pseudonym, student.when.isoformat())
        self.parsed.items.append(
            Item(
                rid,
                tuple(student.rows),
                draft=ReferralDraft(
                    sender=self.sender,
                    record_id=rid,
                    student=student_record,
                    reasons=tuple(ordered),
                    risk_level=risk,
                    legal_basis=legal_basis,
                    emergency_reason=emergency_reason,
                    guardian=guardian,
                    consent=consent,
                    scores=scores,
                    summary=_summary(student, reasons),
                ),
            )
        )


_REASON_ORDER = [
    "screening-positive",
    "suicidal-ideation",
    "self-harm",
    "suicide-attempt",
    "suspected-abuse-neglect",
    "bullying",
    "family-crisis",
    "school-refusal",
    "crisis-call",
    "post-discharge-return",
    "case-support",
    "welfare-follow-up",
]
_FLAG_ZH = {
    "self-harm": "自伤",
    "suicide-attempt": "自杀未遂",
    "suspected-abuse-neglect": "疑似受虐或被忽视",
    "bullying": "校园欺凌",
    "family-crisis": "家庭危机",
    "school-refusal": "拒学",
    "suicidal-ideation": "自杀意念",
}


def _summary(student: _Student, reasons: set[str]) -> str:
    parts = []
    for scale, (result, _) in sorted(student.results.items()):
        band = result.band
        text_ = f"{scale.value.upper()} 总分 {result.total}" + (f"（{band.display_zh}）" if band else "")
        if result.item9 is not None:
            text_ += f"，第9题 {result.item9} 分"
        parts.append(text_)
    flags = [_FLAG_ZH[r] for r in _REASON_ORDER if r in reasons and r in _FLAG_ZH]
    line = f"{student.when.isoformat()} 心理筛查：" + "；".join(parts)
    if flags:
        line += "；标记：" + "、".join(flags)
    return line + "。"


def _add_months(start: date, months: int) -> date:
    month = start.month - 1 + months
    year = start.year + month // 12
    month = month % 12 + 1
    day = min(start.day, [31, 29 if year % 4 == 0 else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1])
    return date(year, month, day)


def read_screening(
    path: Path,
    *,
    sender: Org,
    directory: Directory,
    pseudonymise: Pseudonymise,
    config: Config | None = None,
    today: date | None = None,
) -> Parsed:
    """Parse a screening export into referral items (eligible students), bad rows and skip counts."""
    reader = _Reader(
        sender, directory, pseudonymise, config or load_config(), today or datetime.now(SHANGHAI).date()
    )
    for row in read_table(path, COLUMNS):
        reader.parsed.rows += 1
        reader.read(row)
    for student in reader.students.values():
        reader.draft(student)
    return reader.parsed


def parse_rows(rows: list[dict[str, Any]], **kwargs: Any) -> Parsed:
    """For tests: rows as dicts of canonical columns, numbered from 2."""
    reader = _Reader(
        kwargs["sender"],
        kwargs["directory"],
        kwargs["pseudonymise"],
        kwargs.get("config") or load_config(),
        kwargs.get("today") or datetime.now(SHANGHAI).date(),
    )
    for number, values in enumerate(rows, start=2):
        reader.parsed.rows += 1
        reader.read(Row(number, values))
    for student in reader.students.values():
        reader.draft(student)
    return reader.parsed


def read(path: Path, ctx: Any) -> Parsed:
    """The connector entry point (``connectors.common.agency.Reader``)."""
    return read_screening(
        path,
        sender=ctx.sender,
        directory=ctx.directory,
        pseudonymise=ctx.pseudonymise,
        config=load_config(ctx.config_file),
        today=ctx.today,
    )
