"""SLA deadlines on working days of the mainland-China calendar, with the local override file."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from hub.adapters.workcalendar import ChinaWorkCalendar
from hub.domain.calendar import WeekdayCalendar, add_working_days, due
from hub.domain.error import InvalidInput
from hub.domain.routing import Deadline

CST = timezone(timedelta(hours=8))
CAL = ChinaWorkCalendar()


def test_clock_deadlines_simply_add() -> None:
    start = datetime(2026, 12, 5, 23, 40, tzinfo=CST)
    assert due(start, Deadline.parse("30m"), CAL) == datetime(2026, 12, 6, 0, 10, tzinfo=CST)


@pytest.mark.parametrize(
    ("start", "deadline", "end_of"),
    [
        (datetime(2026, 11, 27, 16, 0, tzinfo=CST), "1wd", date(2026, 11, 30)),  # Friday -> end of Monday
        (datetime(2026, 11, 28, 9, 0, tzinfo=CST), "1wd", date(2026, 11, 30)),  # Saturday -> Monday
        (datetime(2026, 11, 30, 9, 0, tzinfo=CST), "3wd", date(2026, 12, 3)),
        (datetime(2026, 9, 30, 9, 0, tzinfo=CST), "1wd", date(2026, 10, 8)),  # over the National Day week
        (datetime(2026, 10, 9, 9, 0, tzinfo=CST), "1wd", date(2026, 10, 10)),  # a swapped working Saturday
    ],
)
def test_working_day_deadlines_follow_the_public_holiday_calendar(
    start: datetime, deadline: str, end_of: date
) -> None:
    expected = datetime.combine(end_of + timedelta(days=1), datetime.min.time(), tzinfo=CST)
    assert due(start, Deadline.parse(deadline), CAL) == expected


def test_the_override_file_wins(tmp_path: Path) -> None:
    path = tmp_path / "workdays.yaml"
    path.write_text("workdays: [2026-12-05]\nholidays: [2026-12-07]\n", encoding="utf-8")
    cal = ChinaWorkCalendar.from_file(path)
    assert cal.is_working_day(date(2026, 12, 5))  # a Saturday made a working day
    assert not cal.is_working_day(date(2026, 12, 7))  # a Monday closed locally
    assert add_working_days(date(2026, 12, 4), 2, cal) == date(2026, 12, 8)


def test_a_bad_override_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "workdays.yaml"
    path.write_text("workdays: [not-a-date]\n", encoding="utf-8")
    with pytest.raises(InvalidInput):
        ChinaWorkCalendar.from_file(path)


def test_years_the_library_does_not_know_fall_back_to_weekdays_visibly() -> None:
    cal = ChinaWorkCalendar()
    assert cal.is_working_day(date(2035, 1, 8)) is True  # a Monday
    assert cal.is_working_day(date(2035, 1, 6)) is False  # a Saturday
    assert 2035 in cal.unknown_years


def test_deadlines_need_an_aware_start() -> None:
    with pytest.raises(InvalidInput):
        due(datetime(2026, 11, 30, 9, 0), Deadline.parse("1h"), WeekdayCalendar())
