"""Stream step: audit.events -> the hash-chained audit log, with a timer that signs checkpoints."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson
from faust.types import EventT, StreamT

from hub.agents.consume import each_batch
from hub.agents.deadletter import send_dead_letter
from hub.domain.error import HubError
from hub.services.audit import AppendToChain
from hub.services.port import Clock
from schemas.audit import AuditEvent
from schemas.topic import AUDIT_EVENTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditChainServices:
    append: AppendToChain
    clock: Clock
    topic_name: Callable[[str], str]  # applies the configured topic prefix
    checkpoint_interval_s: float = 10.0
    batch: int = 500  # events chained in one transaction
    linger_s: float = 0.5  # how long a batch may wait for more once events flow (settings.worker)
    # A database outage is retried (the events keep their order) before the batch is dead-lettered.
    retry_for_s: float = 30.0


def register(app: faust.App, services: AuditChainServices) -> None:
    source = app.topic(
        services.topic_name(AUDIT_EVENTS.name),
        value_serializer="raw",
        key_serializer="raw",
        partitions=AUDIT_EVENTS.partitions,
    )
    # send_dead_letter reads only .clock and .topic_name, which these services carry too.
    dead_letter_services = cast(Any, services)

    async def handle(batch: list[EventT]) -> None:
        events: list[AuditEvent] = []
        kept: list[Any] = []
        for event in batch:
            try:
                events.append(AuditEvent.model_validate(orjson.loads(event.value)))
                kept.append(event)
            except Exception as exc:  # a malformed record is a dead letter; the rest are chained
                await send_dead_letter(app, dead_letter_services, "chain_audit", event, exc)
        if events:
            await _append(app, services, dead_letter_services, events, kept)

    @app.agent(source, name="chain_audit")
    async def chain_audit(stream: StreamT) -> None:
        # Acked only once chained (each_batch): a stop mid-batch leaves the batch to the next owner.
        await each_batch(stream, handle, size=services.batch, linger=services.linger_s)

    @app.timer(interval=services.checkpoint_interval_s)
    async def checkpoint_audit_chain() -> None:
        try:
            checkpoint = await asyncio.to_thread(services.append.checkpoint)
        except Exception as exc:  # the next tick tries again; rows stay protected by their links
            log.warning("audit checkpoint failed", extra={"error": type(exc).__name__})
            return
        if checkpoint is not None:
            log.info("audit checkpoint", extra={"number": checkpoint.number, "seq": checkpoint.seq})


async def _append(
    app: faust.App,
    services: AuditChainServices,
    dead_letter_services: Any,
    events: Sequence[AuditEvent],
    originals: Sequence[Any],
) -> None:
    deadline = asyncio.get_running_loop().time() + services.retry_for_s
    delay = 0.2
    while True:
        try:
            await asyncio.to_thread(services.append, events)
            return
        except HubError as exc:  # a refusal, not an outage: retrying will not help
            failure: BaseException = exc
        except Exception as exc:  # database unreachable and the like
            if asyncio.get_running_loop().time() + delay < deadline:
                log.warning("audit append failed, retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            failure = exc
        for original in originals:
            await send_dead_letter(app, dead_letter_services, "chain_audit", original, failure)
        return
