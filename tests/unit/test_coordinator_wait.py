"""`hub worker` waits for the group coordinator of a fresh broker (retry loop, no broker needed)."""

from __future__ import annotations

import pytest
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    UnknownTopicOrPartitionError,
)

from hub.adapters.kafka import retry_coordinator


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def test_it_asks_again_until_the_coordinator_answers() -> None:
    clock = FakeClock()
    answers = [CoordinatorNotAvailableError(), CoordinatorLoadInProgressError(), "ready"]

    def ask() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retry_coordinator(ask, 60.0, sleep=clock.sleep, now=clock.now) is True
    assert answers == []
    assert clock.sleeps == [0.1, 0.2]


def test_it_gives_up_at_the_timeout() -> None:
    clock = FakeClock()

    def ask() -> None:
        raise CoordinatorNotAvailableError()

    assert retry_coordinator(ask, 5.0, sleep=clock.sleep, now=clock.now) is False
    assert sum(clock.sleeps) <= 5.0
    assert max(clock.sleeps) == 1.0  # backs off to at most a second


def test_any_other_error_is_not_retried() -> None:
    clock = FakeClock()

    def ask() -> None:
        raise UnknownTopicOrPartitionError()

    with pytest.raises(UnknownTopicOrPartitionError):
        retry_coordinator(ask, 60.0, sleep=clock.sleep, now=clock.now)
    assert clock.sleeps == []
