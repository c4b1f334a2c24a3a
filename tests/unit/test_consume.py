"""The stream steps' loop: an outage is waited out, a bad record is not; acks only after a batch settles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
import sqlalchemy.exc

from hub.agents.consume import each_batch, is_transient, retrying
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


class _Stream:
    """The part of a faust stream ``each_batch`` uses: ``noack().events()`` and ``ack``."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[int | None] = asyncio.Queue()
        self.acked: list[int] = []

    def noack(self) -> _Stream:
        return self

    async def events(self) -> AsyncIterator[int]:
        while (event := await self.incoming.get()) is not None:
            yield event

    async def ack(self, event: int) -> None:
        self.acked.append(event)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")


async def test_a_batch_is_acked_only_after_it_settles_and_batches_are_acked_in_order() -> None:
    stream = _Stream()
    release: dict[int, asyncio.Event] = {}
    handled: list[list[int]] = []

    async def handle(events: list[int]) -> Awaitable[None]:
        handled.append(events)
        gate = release[events[0]] = asyncio.Event()

        async def settle() -> None:
            await gate.wait()

        return settle()

    step = asyncio.ensure_future(each_batch(cast(Any, stream), cast(Any, handle), depth=2))
    await stream.incoming.put(1)
    await _until(lambda: len(handled) == 1)
    await stream.incoming.put(2)
    await _until(lambda: len(handled) == 2)  # the second batch is handled while the first settles
    assert stream.acked == []
    release[2].set()  # the later batch settles first: still nothing acked out of order
    await asyncio.sleep(0.02)
    assert stream.acked == []
    release[1].set()  # idle stream: both are acked without waiting for another record
    await _until(lambda: stream.acked == [1, 2])
    await stream.incoming.put(None)
    await step


async def test_no_more_batches_than_the_depth_wait_to_settle() -> None:
    stream = _Stream()
    gates: list[asyncio.Event] = []

    async def handle(events: list[int]) -> Awaitable[None]:
        gate = asyncio.Event()
        gates.append(gate)

        async def settle() -> None:
            await gate.wait()

        return settle()

    step = asyncio.ensure_future(each_batch(cast(Any, stream), cast(Any, handle), depth=2))
    for event in (1, 2, 3):
        await stream.incoming.put(event)
        await asyncio.sleep(0.02)
    assert len(gates) == 2  # the third waits until the first has settled
    gates[0].set()
    await _until(lambda: len(gates) == 3)
    assert stream.acked == [1]
    gates[1].set()
    gates[2].set()
    await _until(lambda: stream.acked == [1, 2, 3])
    await stream.incoming.put(None)
    await step


async def test_a_settle_that_fails_stops_the_step_with_its_batch_unacked() -> None:
    stream = _Stream()

    async def handle(events: list[int]) -> Awaitable[None]:
        async def settle() -> None:
            raise RuntimeError("broker gone")

        return settle()

    step = asyncio.ensure_future(each_batch(cast(Any, stream), cast(Any, handle), depth=2))
    await stream.incoming.put(1)
    with pytest.raises(RuntimeError, match="broker gone"):
        await asyncio.wait_for(step, 2)
    assert stream.acked == []


async def test_a_lone_record_goes_at_once_and_flowing_records_linger_together() -> None:
    stream = _Stream()
    handled: list[tuple[float, list[int]]] = []
    loop = asyncio.get_running_loop()

    async def handle(events: list[int]) -> None:
        handled.append((loop.time(), events))

    step = asyncio.ensure_future(each_batch(cast(Any, stream), cast(Any, handle), linger=0.3))
    sent = loop.time()
    await stream.incoming.put(1)  # after a pause (the step just started): no linger
    await _until(lambda: len(handled) == 1)
    assert handled[0][0] - sent < 0.2
    await stream.incoming.put(2)  # right behind it: records flow, the batch lingers for more
    await asyncio.sleep(0.05)
    await stream.incoming.put(3)
    await _until(lambda: len(handled) == 2)
    assert handled[1][1] == [2, 3]
    await asyncio.sleep(0.4)  # a pause again
    sent = loop.time()
    await stream.incoming.put(4)
    await _until(lambda: len(handled) == 3)
    assert handled[2][0] - sent < 0.2 and handled[2][1] == [4]
    await stream.incoming.put(None)
    await step
