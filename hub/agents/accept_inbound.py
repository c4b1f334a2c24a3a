"""Stream step: referrals.inbound (connector -> Kafka) -> the same edge checks as HTTP -> submitted."""

from __future__ import annotations

import faust
import orjson
from faust.types import EventT, StreamT

from hub.agents.consume import each_event
from hub.agents.pipeline import PipelineServices
from schemas.envelope import InboundSubmission
from schemas.topic import REFERRALS_INBOUND


def register(app: faust.App, services: PipelineServices) -> None:
    source = app.topic(
        services.topic_name(REFERRALS_INBOUND.name), value_serializer="raw", key_serializer="raw"
    )

    async def accept(event: EventT) -> None:
        # A bad signature, profile errors…: a dead letter with the reason (each_event).
        record = InboundSubmission.model_validate(orjson.loads(event.value))
        await services.accept_inbound(record)

    @app.agent(source, name="accept_inbound")
    async def accept_inbound(stream: StreamT) -> None:
        await each_event(app, services, "accept_inbound", stream, accept)
