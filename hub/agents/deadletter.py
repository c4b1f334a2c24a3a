"""Turn a record a step could not handle into a dead letter with its reason; never drop it."""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any

import faust
import orjson
from pydantic import ValidationError

from hub.agents.metrics import DEAD_LETTERS
from hub.agents.pipeline import PipelineServices
from hub.domain.error import HubError
from schemas.envelope import DeadLetter
from schemas.topic import DEADLETTERS

log = logging.getLogger(__name__)


def reason_of(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, HubError):
        return exc.code, exc.message
    if isinstance(exc, ValidationError):
        # Field names only: pydantic's messages can echo input values.
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
        return "envelope-invalid", f"record does not match the envelope schema ({fields})"
    if isinstance(exc, orjson.JSONDecodeError):
        return "not-json", "record is not valid JSON"
    return "step-failed", type(exc).__name__


async def send_dead_letter(
    app: faust.App, services: PipelineServices, step: str, event: Any, exc: BaseException
) -> None:
    code, reason = reason_of(exc)
    DEAD_LETTERS.labels(step, code).inc()
    msg = event.message
    dead = DeadLetter(
        event_id=str(uuid.uuid4()),
        step=step,
        source_topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key.decode(errors="replace") if isinstance(msg.key, bytes) else msg.key,
        reason_code=code,
        reason=reason,
        at=services.clock.now(),
        original=base64.b64encode(event.value if isinstance(event.value, bytes) else b"").decode(),
    )
    topic = app.topic(services.topic_name(DEADLETTERS.name), value_serializer="raw", key_serializer="raw")
    fut = await topic.send(
        key=dead.key.encode() if dead.key else None, value=orjson.dumps(dead.model_dump(mode="json"))
    )
    await fut
    log.warning(
        "dead letter",
        extra={
            "step": step,
            "reason_code": code,
            "topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
        },
    )
