"""Stream step: referrals.submitted -> routing -> deliveries.created (one per recipient)."""

from __future__ import annotations

import asyncio
import logging

import faust
import orjson

from hub.agents.deadletter import send_dead_letter
from hub.agents.pipeline import PipelineServices
from schemas.envelope import ReferralSubmitted
from schemas.topic import DELIVERIES_CREATED, REFERRALS_SUBMITTED

log = logging.getLogger(__name__)


def register(app: faust.App, services: PipelineServices) -> None:
    source = app.topic(
        services.topic_name(REFERRALS_SUBMITTED.name), value_serializer="raw", key_serializer="raw"
    )
    sink = app.topic(
        services.topic_name(DELIVERIES_CREATED.name), value_serializer="raw", key_serializer="raw"
    )

    @app.agent(source, name="route_referrals")
    async def route_referrals(stream: faust.Stream) -> None:
        async for event in stream.events():
            try:
                submitted = ReferralSubmitted.model_validate(orjson.loads(event.value))
                routed = services.route(submitted)
                await asyncio.to_thread(
                    services.project.referral, submitted, services.clock.now(), routed.plan.ruleset_version
                )
                key = submitted.referral_id.encode()
                pending = [
                    await sink.send(key=key, value=orjson.dumps(d.model_dump(mode="json")))
                    for d in routed.deliveries
                ]
                # Wait for the broker before the offset may be committed: at-least-once, no loss.
                await asyncio.gather(*pending)
            except Exception as exc:  # every failure becomes a dead letter; the partition moves on
                await send_dead_letter(app, services, "route_referrals", event, exc)
