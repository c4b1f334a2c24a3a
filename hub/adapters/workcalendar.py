"""Working days from the mainland-China public-holiday calendar (chinesecalendar) plus a local override file.

The override YAML lets the district fix a year the library does not know yet, or a local closure:

    workdays: [2027-02-07]        # swapped weekend days that are worked
    holidays: [2027-02-08, ...]   # days off
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path

import chinese_calendar
import yaml

from hub.domain.error import InvalidInput


class ChinaWorkCalendar:
    """``WorkCalendar`` from chinesecalendar; overrides first, Monday-Friday past the library's years."""

    def __init__(self, workdays: Iterable[date] = (), holidays: Iterable[date] = ()) -> None:
        self.workdays = frozenset(workdays)
        self.holidays = frozenset(holidays)
        self.unknown_years: set[int] = set()
        self._known: dict[date, bool] = {}  # every routed referral asks about the same few days

    @classmethod
    def from_file(cls, path: Path | None) -> ChinaWorkCalendar:
        if path is None or not path.exists():
            return cls()
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict) or set(data) - {"workdays", "holidays"}:
            raise InvalidInput(
                f"{path}: expected only 'workdays' and 'holidays' lists", code="calendar-invalid"
            )
        try:
            return cls(_dates(data.get("workdays")), _dates(data.get("holidays")))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{path}: {exc}", code="calendar-invalid") from exc

    def is_working_day(self, day: date) -> bool:
        known = self._known.get(day)
        if known is None:
            known = self._known[day] = self._is_working_day(day)
        return known

    def _is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            # The library ships the State Council notice a year at a time; until it is updated (or the
            # override file lists the year) Monday to Friday is the honest guess. Callers can see it.
            self.unknown_years.add(day.year)
            return day.isoweekday() <= 5


def _dates(values: object) -> list[date]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise TypeError("expected a list of dates")
    out = []
    for v in values:
        out.append(v if isinstance(v, date) else date.fromisoformat(str(v)))
    return out
