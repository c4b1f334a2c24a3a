"""Case and call exports (police, civil affairs, street centres, the hotline) -> referral drafts.

One record (CSV/XLSX row, or JSON object, nested objects allowed) per child. Each agency supplies a
``CaseProfile``: its column names, its default reasons and risk, how it claims a legal basis, and what
its guardian consent form covers. Parsing is pure apart from reading the file.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from connectors.common.bundle import ConsentGrant, Guardian, Note, Org, ReferralDraft, Student
from connectors.common.record import BadRow, Item, Parsed, record_id
from connectors.common.table import Columns, flatten, read_json_records, read_table
from connectors.common.value import (
    SHANGHAI,
    ValueProblem,
    birth_year_month,
    gender,
    local_datetime,
    person_name,
    phone,
    relationship,
    text,
    town,
    yes_no,
)
from hub.domain.error import HubError
from schemas.canonical import CS_REASON
from schemas.codesystem import terminology
from schemas.profile import age_at

BASE_COLUMNS: dict[str, list[str]] = {
    "case_no": ["案件编号", "档案编号", "个案编号", "来电编号", "编号", "case no", "case number", "call id"],
    "name": ["姓名", "学生姓名", "未成年人姓名", "name"],
    "gender": ["性别", "gender"],
    "id_no": ["身份证号", "证件号码", "公民身份号码", "学籍号", "id number", "national id"],
    "birth": ["出生日期", "出生年月", "birth date", "dob"],
    "town": ["街镇", "所在街镇", "户籍街镇", "居住街镇", "town"],
    "school": ["学校", "就读学校", "school"],
    "grade": ["年级", "grade"],
    "guardian_name": ["监护人姓名", "监护人", "guardian name"],
    "guardian_phone": ["监护人电话", "联系电话", "guardian phone"],
    "guardian_relationship": ["监护人关系", "与未成年人关系", "guardian relationship"],
    "consent": ["监护人同意", "同意转介", "guardian consent", "consent"],
    "consent_date": ["同意日期", "consent date"],
    "assent": ["本人同意", "学生同意", "student assent"],
    "risk": ["风险等级", "关注等级", "risk level", "risk"],
    "reasons": ["转介原因", "原因", "reasons", "reason"],
    "summary": ["案情摘要", "情况说明", "通话摘要", "家庭情况", "摘要", "summary"],
    "action": ["处置", "处置情况", "action"],
    "date": ["日期", "立案日期", "登记日期", "来电时间", "date", "time"],
    "crisis": ["是否危机", "危机", "crisis"],
    "role": ["角色", "涉案身份", "role"],
    "category": ["类别", "案件类别", "儿童类别", "category"],
}
HEADER_ZH = {k: v[0] for k, v in BASE_COLUMNS.items()}
RISK_LABELS = {"关注": 1, "一般关注": 1, "重点关注": 2, "高危": 3, "高风险": 3, "危机": 4}


@dataclass(frozen=True)
class CaseProfile:
    agency_type: str
    base_reasons: tuple[str, ...]
    default_risk: int
    note_category: str  # data category of the summary (case, family, risk)
    note_title: str
    consent_recipients: tuple[str, ...]
    consent_purposes: tuple[str, ...]
    consent_categories: tuple[str, ...]
    consent_months: int = 12
    required: tuple[str, ...] = ("case_no", "name", "gender", "birth", "town")
    json_keys: tuple[str, ...] = ("cases", "records", "calls", "items")
    # (canonical values, reasons, risk, consented) -> (legal basis or None, emergency reason or None)
    basis: Callable[[Mapping[str, Any], set[str], int, bool], tuple[str | None, str | None]] = (
        lambda values, reasons, risk, consented: ("consent", None) if consented else (None, None)
    )
    # (canonical values, reasons, risk) -> why it is not referred, or None
    eligible: Callable[[Mapping[str, Any], set[str], int], str | None] = lambda values, reasons, risk: None
    # (canonical values) -> extra reasons (role, category…)
    extra_reasons: Callable[[Mapping[str, Any]], set[str]] = lambda values: set()
    id_optional: bool = False  # the hotline rarely knows an ID number: fall back to the call number
    extra_columns: Mapping[str, list[str]] = field(default_factory=dict)

    def columns(self) -> Columns:
        merged = {k: list(v) for k, v in BASE_COLUMNS.items()}
        for k, v in self.extra_columns.items():
            merged.setdefault(k, []).extend(v)
        return Columns(merged, required=self.required)


def _reason_labels() -> dict[str, str]:
    out: dict[str, str] = {}
    system = terminology().system(CS_REASON)
    for code in system:
        out[code] = code
        for lang in ("zh", "en"):
            out[system.concepts[code].display(lang).lower()] = code
    out.update(
        {
            "自伤": "self-harm",
            "欺凌": "bullying",
            "受虐": "suspected-abuse-neglect",
            "被忽视": "suspected-abuse-neglect",
        }
    )
    return out


def risk_of(value: object, default: int) -> int:
    raw = text(value)
    if not raw:
        return default
    if raw in RISK_LABELS:
        return RISK_LABELS[raw]
    m = re.match(r"^([1-4])(级)?$", raw)
    if not m:
        raise ValueProblem(f"risk level {raw!r} is not 1-4 or 关注/重点关注/高危/危机")
    return int(m.group(1))


class _CaseReader:
    def __init__(
        self, profile: CaseProfile, sender: Org, pseudonymise: Callable[[str, str], str], today: date
    ) -> None:
        self.profile = profile
        self.sender = sender
        self.pseudonymise = pseudonymise
        self.today = today
        self.parsed = Parsed()
        self.labels = _reason_labels()
        self.seen: set[str] = set()

    def bad(self, number: int, column: str, reason: str) -> None:
        self.parsed.bad.append(BadRow(number, HEADER_ZH.get(column, column), reason))

    def read(self, number: int, values: Mapping[str, Any]) -> None:
        p = self.profile
        for column in p.required:
            if not text(values.get(column)):
                return self.bad(number, column, f"{HEADER_ZH.get(column, column)} is empty")
        case_no = text(values.get("case_no"))
        raw_id = text(values.get("id_no"))
        try:
            if raw_id:
                pseudonym = self.pseudonymise(raw_id, self.sender.id)
            elif p.id_optional:
                pseudonym = self.pseudonymise(case_no, self.sender.id)
            else:
                return self.bad(number, "id_no", "the identity number is empty")
        except (ValueError, HubError) as exc:
            return self.bad(number, "id_no", getattr(exc, "message", str(exc)))
        try:
            when = local_datetime(values.get("date")) if text(values.get("date")) else None
            if when is not None and when.date() > self.today:
                return self.bad(number, "date", "the date is in the future")
            birth = birth_year_month(values.get("birth"), today=self.today)
            student_gender = gender(values.get("gender"))
            student_town = town(values.get("town"))
            name = person_name(values.get("name")) if text(values.get("name")) else None
            risk = risk_of(values.get("risk"), p.default_risk)
            consented = yes_no(values.get("consent"))
            assent = yes_no(values.get("assent"))
            guardian_phone = (
                phone(values.get("guardian_phone")) if text(values.get("guardian_phone")) else None
            )
            guardian_rel = relationship(values.get("guardian_relationship"))
        except ValueProblem as exc:
            column = _column_of(exc, values)
            return self.bad(number, column, str(exc))
        reasons = set(p.base_reasons) | p.extra_reasons(values)
        for label in re.split(r"[、,，;；/]+", text(values.get("reasons"))):
            label = label.strip()
            if not label:
                continue
            code = self.labels.get(label.lower())
            if code is None:
                return self.bad(
                    number, "reasons", f"reason {label!r} is not a referral reason (代码或中文名称)"
                )
            reasons.add(code)
        why_not = p.eligible(values, reasons, risk)
        if why_not:
            self.parsed.skip(why_not)
            return None
        if not reasons:
            return self.bad(number, "reasons", "no referral reason")
        if "crisis-call" in reasons:
            risk = 4  # a hotline crisis call is a crisis (DESIGN §6)
        key = record_id(self.sender.id, case_no, pseudonym)
        if key in self.seen:
            return self.bad(number, "case_no", "the same case and child appear twice")
        self.seen.add(key)
        at = when or datetime.combine(self.today, time(0), SHANGHAI)
        age = age_at(birth, at)
        if consented and age is not None and age >= 14 and not assent:
            consented = False  # from 14 the child's own assent is needed as well
        basis, emergency_reason = p.basis(values, reasons, risk, consented)
        if basis is None:
            self.parsed.held.append(
                BadRow(
                    number,
                    HEADER_ZH["consent"],
                    f"risk level {risk}: no legal basis to refer (consent missing)",
                )
            )
            return None
        consent = None
        if consented:
            start = at.date()
            if text(values.get("consent_date")):
                with contextlib.suppress(ValueProblem):
                    start = local_datetime(values.get("consent_date")).date()
            consent = ConsentGrant(
                p.consent_recipients,
                p.consent_purposes,
                p.consent_categories,
                start,
                _plus_months(start, p.consent_months),
                assent,
            )
        guardian = None
        if text(values.get("guardian_name")) or guardian_phone or consented:
            guardian = Guardian(
                guardian_rel,
                person_name(values.get("guardian_name")) if text(values.get("guardian_name")) else None,
                guardian_phone,
            )
        summary = text(values.get("summary"))
        action = text(values.get("action"))
        notes = (Note(p.note_category, p.note_title, summary, at),) if summary else ()
        ordered = sorted(reasons, key=lambda r: (r not in p.base_reasons, r))
        self.parsed.items.append(
            Item(
                key,
                (number,),
                draft=ReferralDraft(
                    sender=self.sender,
                    record_id=key,
                    local_id=case_no,
                    student=Student(
                        pseudonym=pseudonym,
                        birth=birth,
                        gender=student_gender,
                        town=student_town,
                        name=name,
                        grade=text(values.get("grade")) or None,
                    ),
                    reasons=tuple(ordered),
                    risk_level=risk,
                    legal_basis=basis,
                    emergency_reason=emergency_reason,
                    guardian=guardian,
                    consent=consent,
                    notes=notes,
                    summary=action or None,
                ),
            )
        )
        return None


def _column_of(exc: ValueProblem, values: Mapping[str, Any]) -> str:
    message = str(exc)
    for prefix, column in (
        ("birth", "birth"),
        ("gender", "gender"),
        ("town", "town"),
        ("the name", "name"),
        ("risk", "risk"),
        ("not a phone", "guardian_phone"),
        ("guardian relationship", "guardian_relationship"),
        ("time", "date"),
        ("date", "date"),
    ):
        if message.startswith(prefix):
            return column
    return "consent" if "是/否" in message else "$"


def _plus_months(start: date, months: int) -> date:
    month = start.month - 1 + months
    year = start.year + month // 12
    return date(year, month % 12 + 1, min(start.day, 28))


def read_cases(path: Path, ctx: Any, profile: CaseProfile) -> Parsed:
    """Read a JSON, CSV or XLSX case export with ``profile``; ``ctx`` is a connectors ReadContext."""
    reader = _CaseReader(profile, ctx.sender, ctx.pseudonymise, ctx.today)
    columns = profile.columns()
    if path.suffix.lower() == ".json":
        _, records = read_json_records(path, profile.json_keys)
        for number, record in enumerate(records, start=1):
            reader.parsed.rows += 1
            if not isinstance(record, dict):
                reader.bad(number, "$", "a record is a JSON object")
                continue
            reader.read(number, flatten(record, columns))
        return reader.parsed
    for row in read_table(path, columns):
        reader.parsed.rows += 1
        reader.read(row.number, dict(row.values))
    return reader.parsed
