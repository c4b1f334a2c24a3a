"""Generate a synthetic screening export (CSV or XLSX): `python -m connectors.school.generate --rows 1000`.

Rows as a screening platform exports them: one row per student and scale (PHQ-9 for everyone, GAD-7
for most), Chinese headers by default. Names, numbers and phones are made up (connectors.common.synthetic);
schools and towns come from the district directory. The same seed gives the same file.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from connectors.common import synthetic
from connectors.common.directory import load_directory
from connectors.school.screening import HEADERS_ZH

_TOWNS_ZH = {
    "yueyang": "岳阳街道",
    "yongfeng": "永丰街道",
    "fangsong": "方松街道",
    "zhongshan": "中山街道",
    "guangfulin": "广富林街道",
    "jiuliting": "九里亭街道",
    "sijing": "泗泾镇",
    "sheshan": "佘山镇",
    "chedun": "车墩镇",
    "xinqiao": "新桥镇",
    "dongjing": "洞泾镇",
    "jiuting": "九亭镇",
    "maogang": "泖港镇",
    "shihudang": "石湖荡镇",
    "xinbang": "新浜镇",
    "yexie": "叶榭镇",
    "xiaokunshan": "小昆山镇",
}
_ANSWERS = ("完全不会", "好几天", "一半以上的天数", "几乎每天")
_RELATION = ("母亲", "父亲", "母亲", "父亲", "祖母", "监护人")


def _items(rng: random.Random, n: int, severity: float) -> list[int]:
    return [min(3, max(0, round(rng.gauss(severity, 0.8)))) for _ in range(n)]


def _phq9(rng: random.Random) -> list[int]:
    roll = rng.random()
    severity = 0.3 if roll < 0.7 else 1.2 if roll < 0.86 else 1.9 if roll < 0.95 else 2.6
    items = _items(rng, 9, severity)
    item9 = rng.random()
    items[8] = 0 if item9 < 0.9 else 1 if item9 < 0.97 else rng.choice((2, 3))
    return items


def rows(
    count: int, school_id: str, *, seed: int = 7, screening: date = date(2026, 11, 20)
) -> Iterator[dict[str, str]]:
    """``count`` rows for one school; the school's town is the commonest town of its students."""
    directory = load_directory()
    school = directory.org(school_id)
    home = directory.entries[school_id].towns[0]
    rng = random.Random(seed)  # noqa: S311  (synthetic sample data, not secrets)
    produced = 0
    used: set[str] = set()
    while produced < count:
        male = rng.random() < 0.5
        grade_index = rng.randrange(6, 10) if "middle" in school_id else rng.randrange(1, 13)
        school_year = screening.year if screening.month >= 9 else screening.year - 1
        birth = synthetic.birth_for_grade(rng, grade_index, school_year)
        number = "G" + synthetic.resident_id(rng, birth, male)
        if number in used:
            continue
        used.add(number)
        town = home if rng.random() < 0.7 else rng.choice(list(_TOWNS_ZH))
        consent = rng.random() < 0.8
        base = {
            "student_no": number,
            "name": synthetic.name(rng),
            "gender": "男" if male else "女",
            "birth": birth.isoformat(),
            "school": school.name,
            "grade": synthetic.GRADES[grade_index - 1],
            "class": f"{rng.randrange(1, 9)}班",
            "town": _TOWNS_ZH[town],
            "flags": rng.choice(("欺凌", "拒学", "家庭危机", "自伤")) if rng.random() < 0.03 else "",
            "date": screening.isoformat(),
            "consent": "是" if consent else "否",
            "consent_date": screening.isoformat() if consent else "",
            "assent": "是" if consent and grade_index >= 8 and rng.random() < 0.9 else "",
            "guardian_name": synthetic.name(rng),
            "guardian_phone": synthetic.phone(rng),
            "guardian_relationship": rng.choice(_RELATION),
        }
        scales = [("PHQ-9", _phq9(rng))]
        if rng.random() < 0.6:
            scales.append(("GAD-7", _items(rng, 7, rng.choice((0.3, 0.3, 0.3, 1.2, 2.3)))))
        for scale, items in scales:
            if produced >= count:
                break
            row = dict(base, scale=scale, total="")
            as_text = rng.random() < 0.1  # some platforms export the answer texts
            for k in range(1, 10):
                row[f"q{k}"] = (
                    (_ANSWERS[items[k - 1]] if as_text else str(items[k - 1])) if k <= len(items) else ""
                )
            row["total"] = str(sum(items))
            yield row
            produced += 1


def write(path: Path, table: list[dict[str, str]], *, english: bool = False) -> None:
    columns = list(HEADERS_ZH)
    headers = columns if english else [HEADERS_ZH[c] for c in columns]
    if path.suffix.lower() == ".xlsx":
        from openpyxl import Workbook

        book = Workbook()
        sheet = book.active
        assert sheet is not None
        sheet.title = "筛查结果"
        sheet.append(headers)
        for row in table:
            sheet.append([row.get(c, "") for c in columns])
        book.save(path)
        return
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(headers)
        for row in table:
            writer.writerow([row.get(c, "") for c in columns])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--school", default="school-songjiang-no2-middle")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--date", default="2026-11-20", help="screening date (YYYY-MM-DD)")
    parser.add_argument("--english", action="store_true", help="English column headers")
    parser.add_argument("--out", type=Path, required=True, help="a .csv or .xlsx path")
    args = parser.parse_args(argv)
    table = list(rows(args.rows, args.school, seed=args.seed, screening=date.fromisoformat(args.date)))
    write(args.out, table, english=args.english)
    print(f"wrote {len(table)} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
