"""Native field values as agencies type them (男/女, 2012年3月, 岳阳街道, 是/否) turned into profile codes."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache

from schemas.canonical import CS_TOWN
from schemas.codesystem import terminology

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")


class ValueProblem(ValueError):
    """A native value that cannot be read; the message says what was expected."""


def text(value: object) -> str:
    """A cell as clean text: NFKC (full-width digits and letters), trimmed; None/NaN -> ''."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return unicodedata.normalize("NFKC", str(value)).strip()


_MALE = {"男", "男性", "m", "male", "1"}
_FEMALE = {"女", "女性", "f", "female", "2"}


def gender(value: object) -> str:
    raw = text(value).lower()
    if raw in _MALE:
        return "male"
    if raw in _FEMALE:
        return "female"
    if raw in {"未知", "unknown", "9", "0"}:
        return "unknown"
    raise ValueProblem(f"gender {text(value)!r} is not 男/女 (male/female)")


_YM = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})(?:\s*[-/.月]\s*(\d{1,2})\s*日?|\s*月)?$")
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})?$")


def birth_year_month(value: object, *, today: date | None = None) -> str:
    """YYYY-MM from 2012-03-15, 2012/3/15, 2012年3月, 201203, 20120315 or a spreadsheet date."""
    if isinstance(value, datetime | date):
        year, month = value.year, value.month
    else:
        raw = text(value)
        m = _YM.match(raw) or _COMPACT.match(raw)
        if not m:
            raise ValueProblem("birth date is not a date such as 2012-03 or 2012年3月")
        year, month = int(m.group(1)), int(m.group(2))
    if not 1 <= month <= 12:
        raise ValueProblem(f"birth month {month} is not 1-12")
    today = today or datetime.now(SHANGHAI).date()
    if (year, month) > (today.year, today.month) or year < today.year - 30:
        raise ValueProblem(f"birth date {year}-{month:02d} is not plausible for a student")
    return f"{year:04d}-{month:02d}"


def local_date(value: object) -> date:
    """A calendar date from 2026-11-20, 2026/11/20, 2026年11月20日, 20261120 or a spreadsheet date."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raw = text(value)
    raw = raw.split("T")[0].split(" ")[0]
    m = _YM.match(raw) or _COMPACT.match(raw)
    if not m or not m.group(3):
        raise ValueProblem(f"date {raw!r} is not a date such as 2026-11-20")
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise ValueProblem(f"date {raw!r} does not exist") from None


def local_datetime(value: object) -> datetime:
    """An aware datetime (Asia/Shanghai when the text has no offset)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=SHANGHAI)
    raw = text(value).replace("/", "-")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        try:
            return datetime.combine(local_date(raw), datetime.min.time(), SHANGHAI)
        except ValueProblem:
            raise ValueProblem(f"time {raw!r} is not a date-time such as 2026-11-29 23:42") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=SHANGHAI)


@lru_cache(maxsize=1)
def _towns() -> dict[str, str]:
    out: dict[str, str] = {}
    system = terminology().system(CS_TOWN)
    for code in system:
        out[code] = code
        for lang in ("zh", "en"):
            name = system.concepts[code].display(lang)
            out[name.lower()] = code
            short = re.sub(r"(街道|镇| street| town| subdistrict)$", "", name.lower())
            out[short] = code
    return out


def town(value: object) -> str:
    """The town code from 岳阳街道, 岳阳, Yueyang Street or yueyang."""
    raw = text(value)
    code = _towns().get(raw.lower()) or _towns().get(re.sub(r"(街道|镇)$", "", raw))
    if code is None:
        raise ValueProblem(f"town {raw!r} is not a street or town of Songjiang District")
    return code


_YES = {"是", "y", "yes", "true", "1", "同意", "已同意", "√", "✓"}
_NO = {"否", "n", "no", "false", "0", "不同意", "未同意", "", "×"}


def yes_no(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raw = text(value).lower()
    if raw in _YES:
        return True
    if raw in _NO:
        return False
    raise ValueProblem(f"{text(value)!r} is not 是/否 (yes/no)")


_PHONE = re.compile(r"^\+?[\d\-\s()]{7,20}$")


def phone(value: object) -> str:
    raw = text(value)
    if not _PHONE.match(raw):
        raise ValueProblem("not a phone number (7-20 digits)")
    return raw


_COMPOUND = ("欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "令狐", "宇文", "长孙")


def person_name(value: object) -> dict[str, object]:
    """A FHIR HumanName of a Chinese name: family = the surname (two characters for compound ones)."""
    raw = re.sub(r"\s+", "", text(value))
    if not raw:
        raise ValueProblem("the name is empty")
    if re.search(r"[A-Za-z]", raw):
        return {"text": text(value)}
    split = 2 if raw.startswith(_COMPOUND) and len(raw) > 2 else 1
    name: dict[str, object] = {"text": raw, "family": raw[:split]}
    if raw[split:]:
        name["given"] = [raw[split:]]
    return name


_RELATIONSHIP = {
    "母亲": "MTH",
    "妈妈": "MTH",
    "母": "MTH",
    "mother": "MTH",
    "父亲": "FTH",
    "爸爸": "FTH",
    "父": "FTH",
    "father": "FTH",
    "父母": "PRN",
    "parent": "PRN",
    "监护人": "GUARD",
    "guardian": "GUARD",
    "祖母": "GRMTH",
    "外祖母": "GRMTH",
    "奶奶": "GRMTH",
    "外婆": "GRMTH",
    "grandmother": "GRMTH",
    "祖父": "GRFTH",
    "外祖父": "GRFTH",
    "爷爷": "GRFTH",
    "外公": "GRFTH",
    "grandfather": "GRFTH",
    "继母": "STPMTH",
    "继父": "STPFTH",
}


def relationship(value: object) -> str:
    """v3 RoleCode of a guardian's relationship; empty -> GUARD."""
    raw = text(value).lower()
    if not raw:
        return "GUARD"
    code = _RELATIONSHIP.get(raw)
    if code is None:
        raise ValueProblem(f"guardian relationship {text(value)!r} is not one of 母亲/父亲/祖母/祖父/监护人…")
    return code


def integer(value: object, low: int, high: int, what: str) -> int:
    raw = text(value)
    try:
        number = int(raw)
    except ValueError:
        raise ValueProblem(f"{what} {raw!r} is not a whole number") from None
    if not low <= number <= high:
        raise ValueProblem(f"{what} {number} is outside {low}-{high}")
    return number
