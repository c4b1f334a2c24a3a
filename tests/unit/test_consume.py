"""The stream steps' retry rule: an outage is waited out, a bad record is not."""

from __future__ import annotations

import pytest
import sqlalchemy.exc

from hub.agents.consume import is_transient, retrying
from hub.domain.error import HubError


def _operational() -> Exception:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))


def test_database_and_network_outages_are_transient_and_bad_records_are_not() -> None:
    assert is_transient(_operational())
    assert is_transient(ConnectionRefusedError())
    assert is_transient(TimeoutError())
    assert not is_transient(ValueError("bad envelope"))
    assert not is_transient(HubError(message="no route", code="no-route-matched", status=422))
    assert not is_transient(sqlalchemy.exc.IntegrityError("INSERT", {}, ValueError("dup")))


async def test_an_outage_is_retried_until_the_call_succeeds() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise _operational()
        return "done"

    assert await retrying(flaky, "test", retry_for_s=5.0) == "done"
    assert calls == 3


async def test_a_bad_record_fails_at_once_and_a_long_outage_gives_up() -> None:
    calls = 0

    async def bad() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("not an envelope")

    with pytest.raises(ValueError, match="not an envelope"):
        await retrying(bad, "test", retry_for_s=5.0)
    assert calls == 1

    async def down() -> None:
        raise _operational()

    with pytest.raises(sqlalchemy.exc.OperationalError):  # gives up after the bound, raises the cause
        await retrying(down, "test", retry_for_s=0.5)
