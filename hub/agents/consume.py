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
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import faust
from faust.types import EventT, StreamT

from hub.agents.deadletter import send_dead_letter
from hub.agents.metrics import EVENTS, STEP_SECONDS
from hub.agents.pipeline import PipelineServices

log = logging.getLogger(__name__)

T = TypeVar("T")

# A batch is what has arrived while the step was busy with the previous one, at most BATCH records:
# nothing waits for a batch to fill (a lone record goes at once), while a backlog is worked through
# BATCH records to a database transaction and one wait for the broker.
BATCH = 200
# Routing batches whose records may await the broker's acknowledgement while the next is routed.
ROUTE_DEPTH = 2
# Records "flow" while the next one arrives within this long of the step finishing the previous
# batch: only then does a step's linger hold a batch open for more. After a longer pause, a record
# goes at once.
FLOWING_S = 0.1
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
    handle: Callable[[list[EventT]], Awaitable[Awaitable[None] | None]],
    *,
    size: int = BATCH,
    linger: float = 0.0,
    depth: int = 1,
) -> None:
    """Hand ``handle`` the records as they arrive, up to ``size`` at a time; ack them once handled.

    A reader task moves records from the stream into a queue of ``size`` (so a backlog waits in
    Kafka, not in memory); the step takes the first record waiting and whatever else is already
    there, after ``linger`` seconds when the step asks for it. No timer polls for a batch while the
    stream is idle (faust's ``take`` wakes every ``within`` seconds even then). The linger applies
    only while records flow (one arrived within ``FLOWING_S`` of the previous batch being handled):
    a record after a pause is handed over at once.

    ``handle`` may return a *settle* awaitable: the rest of the batch's work that only waits (for
    the broker to acknowledge what the step produced). At most ``depth`` batches are in flight —
    the one being handled and up to ``depth - 1`` earlier ones still settling — so one batch's
    wait for the broker overlaps the next batch's database work; records are still acked strictly
    in order, each batch only after its settle has finished. ``handle`` dead-letters what it
    cannot process itself; an exception out of it or out of a settle stops the agent with the
    batch unacknowledged.
    """
    source = cast(faust.Stream, stream).noack()
    queue: asyncio.Queue[EventT] = asyncio.Queue(maxsize=size)
    settling: deque[tuple[asyncio.Future[None], list[EventT]]] = deque()

    async def read() -> None:
        async for event in source.events():
            await queue.put(event)

    async def ack_settled(keep: int) -> None:
        # Ack finished batches in order; wait for the oldest while more than ``keep`` are pending.
        while settling and (len(settling) > keep or settling[0][0].done()):
            settle, done = settling.popleft()
            await settle
            for event in done:
                await source.ack(event)

    reader = asyncio.ensure_future(read())
    loop = asyncio.get_running_loop()
    handled_at = float("-inf")  # when the step last finished handling a batch
    try:
        while True:
            first = asyncio.ensure_future(queue.get())
            while not (first.done() or reader.done()):
                # Waiting for records; meanwhile ack each batch as it settles.
                waiting = {first, reader, *(settling[0][:1] if settling else ())}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                await ack_settled(depth)
            if not first.done():  # the stream ended (agent stopping) or its reader failed
                first.cancel()
                reader.result()
                return
            events = [first.result()]
            flowing = loop.time() - handled_at < FLOWING_S
            if linger and flowing and queue.qsize() < size - 1:
                # Records are flowing: give the next few a moment to join this batch (one
                # transaction and one broker round trip for all of them). After a pause, nothing waits.
                await asyncio.sleep(linger)
            while len(events) < size and not queue.empty():
                events.append(queue.get_nowait())
            settle = await handle(events)
            handled_at = loop.time()
            if settle is None:
                await ack_settled(0)
                for event in events:
                    await source.ack(event)
                continue
            settling.append((asyncio.ensure_future(settle), events))
            await ack_settled(depth - 1)
    finally:
        reader.cancel()
        for settle, _ in settling:  # not acked: the next owner of the partition handles them again
            settle.cancel()


async def each_event(
    app: faust.App,
    services: PipelineServices,
    step: str,
    stream: StreamT,
    handle: Callable[[EventT], Awaitable[None]],
    *,
    size: int = BATCH,
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

    await each_batch(stream, handle_batch, size=size)


def observe_batch(step: str, ok: int, failed: int, seconds: float) -> None:
    """Metrics for a step that handles a batch at once: counts, and the time per record."""
    if ok:
        EVENTS.labels(step, "ok").inc(ok)
    if failed:
        EVENTS.labels(step, "error").inc(failed)
    n = ok + failed
    for _ in range(n):
        STEP_SECONDS.labels(step).observe(seconds / n)
