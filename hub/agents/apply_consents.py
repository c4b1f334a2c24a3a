"""Stream steps: consent changes -> withdraw unopened deliveries under a revoked consent -> projection."""

from __future__ import annotations

import asyncio

import faust
import orjson
from faust.types import EventT, StreamT

from hub.agents.consume import each_event
from hub.agents.pipeline import PipelineServices
from hub.services.auditing import consent_change_event, withdrawal_event
from schemas.envelope import ConsentChanged, DeliveryWithdrawn
from schemas.topic import CONSENTS_CHANGED, DELIVERIES_WITHDRAWN


def register(app: faust.App, services: PipelineServices) -> None:
    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(services.topic_name(name), value_serializer="raw", key_serializer="raw")

    withdrawn_topic = services.topic_name(DELIVERIES_WITHDRAWN.name)

    async def apply_change(event: EventT) -> None:
        change = ConsentChanged.model_validate(orjson.loads(event.value))
        withdrawals = await asyncio.to_thread(services.apply_consent, change)
        await services.audit.record(consent_change_event(change))
        for withdrawal in withdrawals:
            await services.publisher.publish(withdrawn_topic, withdrawal.referral_id, withdrawal)
            await services.audit.record(withdrawal_event(withdrawal))

    async def project_withdrawal(event: EventT) -> None:
        withdrawal = DeliveryWithdrawn.model_validate(orjson.loads(event.value))
        await asyncio.to_thread(services.record_withdrawal, withdrawal)

    @app.agent(raw_topic(CONSENTS_CHANGED.name), name="apply_consent_changes")
    async def apply_consent_changes(stream: StreamT) -> None:
        await each_event(app, services, "apply_consent_changes", stream, apply_change)

    @app.agent(raw_topic(DELIVERIES_WITHDRAWN.name), name="project_withdrawals")
    async def project_withdrawals(stream: StreamT) -> None:
        await each_event(app, services, "project_withdrawals", stream, project_withdrawal)
