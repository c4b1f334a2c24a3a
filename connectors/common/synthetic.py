"""Synthetic people for samples and load tests: generated Chinese names, resident ID numbers, phones.

Everything here is made up. Resident ID numbers use Songjiang's area code with a valid check
character (so they pseudonymise like real ones) and sequence numbers from the 9xx block; phone numbers
follow the directory's placeholder pattern (…-0000-….). No real person is described.
"""

from __future__ import annotations

import random
from datetime import date

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁沈"
GIVEN = "子梓浩宇轩涵欣怡雨萱思琪俊杰文博嘉懿佳诗语晨阳一诺若彤明亮晓雪天佑家乐可馨雅婷泽宁安然书瑶景行"
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
SONGJIANG_AREA = "310117"


def name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))


def resident_id(rng: random.Random, birth: date, male: bool) -> str:
    seq = rng.randrange(90, 100) * 10 + rng.choice((1, 3, 5, 7, 9) if male else (0, 2, 4, 6, 8))
    body = f"{SONGJIANG_AREA}{birth:%Y%m%d}{seq:03d}"
    total = sum(int(c) * w for c, w in zip(body, _WEIGHTS, strict=True))
    return body + _CHECK[total % 11]


def phone(rng: random.Random) -> str:
    return f"1{rng.choice('3589')}{rng.randrange(10)}-0000-{rng.randrange(10000):04d}"


def birth_for_grade(rng: random.Random, grade_index: int, school_year: int) -> date:
    """A birth date for grade 1..12 (一年级 … 高三) in the school year starting ``school_year``."""
    year = school_year - 6 - (grade_index - 1)
    if rng.random() < 0.67:  # born Sept-Dec of the year before, or Jan-Aug
        return date(year, rng.randrange(1, 9), rng.randrange(1, 29))
    return date(year - 1, rng.randrange(9, 13), rng.randrange(1, 29))


GRADES = (
    "一年级",
    "二年级",
    "三年级",
    "四年级",
    "五年级",
    "初一",
    "初二",
    "初三",
    "初四",
    "高一",
    "高二",
    "高三",
)
