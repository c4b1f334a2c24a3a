"""The loop every stream step runs: records in small batches, acknowledged only once handled.

faust acks an event in a ``finally`` when the agent is cancelled (worker stop, partition revoked),
which would commit a record a step left half-done. Here an offset is acked only after the step has
finished with the record — its writes made and its produced records acknowledged by the broker — so a
record cut off by a stop or a rebalance is processed again by the next owner (every effect is
idempotent). A record a step cannot process becomes a dead letter; a database or broker outage is
retried for a while first, so a short outage does not turn good records into dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import faust
from faust.types import EventT, StreamT

from hub.agents.deadletter import send_dead_letter
from hub.agents.metrics import EVENTS, STEP_SECONDS
from hub.agents.pipeline import PipelineServices

log = logging.getLogger(__name__)

T = TypeVar("T")

# A batch is what arrived within WITHIN_S, at most BATCH records: latency stays a few ms, while a
# backlog is worked through BATCH records to a database transaction and one wait for the broker.
# (faust wakes a batching agent every ``within`` even when idle: 5 ms is kept for the routing step,
# the per-record steps use EVENT_WITHIN_S.)
BATCH = 200
WITHIN_S = 0.005
EVENT_WITHIN_S = 0.02
RETRY_FOR_S = 30.0

_TRANSIENT_NAMES = {"OperationalError", "InterfaceError", "DisconnectionError", "KafkaTimeoutError"}


def is_transient(exc: BaseException) -> bool:
    """An outage (database or broker unreachable, a timeout), not a record the step cannot process."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any(c.__name__ in _TRANSIENT_NAMES for c in type(exc).__mro__)


async def retrying(call: Callable[[], Awaitable[T]], what: str, retry_for_s: float = RETRY_FOR_S) -> T:
    """Run ``call``; on an outage try again with backoff for up to ``retry_for_s``, then raise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for_s
    delay = 0.2
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or loop.time() + delay >= deadline:
                raise
            log.warning("step waits for an outage", extra={"step": what, "error": type(exc).__name__})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def each_batch(
    stream: StreamT,
    handle: Callable[[list[EventT]], Awaitable[None]],
    *,
    size: int = BATCH,
    within: float = WITHIN_S,
) -> None:
    """Hand ``handle`` the records as they arrive, up to ``size`` at a time; ack them after it returns.

    ``handle`` dead-letters what it cannot process itself; an exception out of it stops the agent
    with the batch unacknowledged.
    """
    source = cast(faust.Stream, stream)  # StreamT does not declare noack_take
    async for batch in source.noack_take(size, within=within):
        events = cast(list[EventT], list(batch))
        await handle(events)
        for event in events:
            await source.ack(event)


async def each_event(
    app: faust.App,
    services: PipelineServices,
    step: str,
    stream: StreamT,
    handle: Callable[[EventT], Awaitable[None]],
    *,
    size: int = BATCH,
    within: float = EVENT_WITHIN_S,
) -> None:
    """``each_batch`` for steps that handle one record at a time; a failure dead-letters that record."""

    async def handle_batch(events: list[EventT]) -> None:
        for event in events:
            start = time.perf_counter()
            try:
                await retrying(lambda event=event: handle(event), step)  # type: ignore[misc]
            except Exception as exc:  # a dead letter with the reason; the partition moves on
                EVENTS.labels(step, "error").inc()
                await send_dead_letter(app, services, step, event, exc)
            else:
                EVENTS.labels(step, "ok").inc()
            STEP_SECONDS.labels(step).observe(time.perf_counter() - start)

    await each_batch(stream, handle_batch, size=size, within=within)


def observe_batch(step: str, ok: int, failed: int, seconds: float) -> None:
    """Metrics for a step that handles a batch at once: counts, and the time per record."""
    if ok:
        EVENTS.labels(step, "ok").inc(ok)
    if failed:
        EVENTS.labels(step, "error").inc(failed)
    n = ok + failed
    for _ in range(n):
        STEP_SECONDS.labels(step).observe(seconds / n)
