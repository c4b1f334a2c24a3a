"""SLA deadlines on clock time or on working days of the mainland-China calendar (pure)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Protocol

from hub.domain.directory import CHINA_TZ
from hub.domain.error import InvalidInput
from hub.domain.routing import Deadline

# A working-day walk never needs more than a few weeks; the cap turns a broken calendar into an error.
_MAX_DAYS_SCANNED = 366


class WorkCalendar(Protocol):
    """Says whether a local date is a working day (public holidays and swapped weekends included)."""

    def is_working_day(self, day: date) -> bool: ...


class WeekdayCalendar:
    """Monday to Friday: for tests and for years the holiday calendar does not cover yet."""

    def is_working_day(self, day: date) -> bool:
        return day.isoweekday() <= 5


def due(start: datetime, deadline: Deadline, calendar: WorkCalendar) -> datetime:
    """When ``deadline`` runs out for a clock started at ``start`` (aware; the result in the same zone).

    Clock time simply adds. ``n`` working days end at local midnight after the n-th working day that
    follows the start day: referred on Friday afternoon with 1 working day to acknowledge, due by the
    end of Monday (or of the first working day after a holiday).
    """
    if start.tzinfo is None or start.utcoffset() is None:
        raise InvalidInput("SLA clocks need a timezone-aware start", code="naive-datetime")
    if not deadline.working_days:
        return start + deadline.amount
    day = add_working_days(start.astimezone(CHINA_TZ).date(), deadline.amount.days, calendar)
    end = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=CHINA_TZ)
    return end.astimezone(start.tzinfo)


def add_working_days(day: date, n: int, calendar: WorkCalendar) -> date:
    """The n-th working day strictly after ``day``."""
    count = 0
    current = day
    for _ in range(_MAX_DAYS_SCANNED):
        current += timedelta(days=1)
        if calendar.is_working_day(current):
            count += 1
            if count >= n:
                return current
    raise InvalidInput(f"no {n} working days within a year after {day.isoformat()}", code="calendar-broken")


def is_working_time(at: datetime, calendar: WorkCalendar) -> bool:
    """Whether ``at`` falls on a local working day."""
    return calendar.is_working_day(at.astimezone(CHINA_TZ).date())
