"""Stream step: referrals.inbound (connector -> Kafka) -> the same edge checks as HTTP -> submitted."""

from __future__ import annotations

import faust
import orjson

from hub.agents.deadletter import send_dead_letter
from hub.agents.metrics import timed
from hub.agents.pipeline import PipelineServices
from schemas.envelope import InboundSubmission
from schemas.topic import REFERRALS_INBOUND


def register(app: faust.App, services: PipelineServices) -> None:
    source = app.topic(
        services.topic_name(REFERRALS_INBOUND.name), value_serializer="raw", key_serializer="raw"
    )

    @app.agent(source, name="accept_inbound")
    async def accept_inbound(stream: faust.Stream) -> None:
        async for event in stream.events():
            try:
                with timed("accept_inbound"):
                    record = InboundSubmission.model_validate(orjson.loads(event.value))
                    await services.accept_inbound(record)
            except Exception as exc:  # bad signature, profile errors...: a dead letter with the reason
                await send_dead_letter(app, services, "accept_inbound", event, exc)
