"""Stream steps: project status changes and openings into the read model (idempotent).

Deliveries are projected by the routing step itself (``route_referrals``), in its transaction.
"""

from __future__ import annotations

import asyncio

import faust
import orjson
from faust.types import EventT, StreamT

from hub.agents.consume import each_event
from hub.agents.pipeline import PipelineServices
from hub.agents.route_referrals import route_and_send
from schemas.audit import transition_event
from schemas.envelope import DeliveryOpened, TaskStatusChanged
from schemas.topic import DELIVERIES_OPENED, FOLLOWUPS_CHANGED, TASKS_STATUS_CHANGED


def register(app: faust.App, services: PipelineServices) -> None:
    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(services.topic_name(name), value_serializer="raw", key_serializer="raw")

    async def project_status_change(event: EventT) -> None:
        change = TaskStatusChanged.model_validate(orjson.loads(event.value))
        await asyncio.to_thread(services.project.status, change)
        await services.audit.record(transition_event(change))
        if change.to_status == "completed":
            topic = services.topic_name(FOLLOWUPS_CHANGED.name)
            for scheduled in await asyncio.to_thread(services.schedule_followups, change):
                await services.publisher.publish(topic, scheduled.referral_id, scheduled)
        if change.to_status == "rejected":
            # A declined referral goes to the next recipient of its pathway.
            intake, declined = await asyncio.to_thread(services.project.reroute_context, change.referral_id)
            if intake is not None:
                (outcome,) = await route_and_send(app, services, [(intake, declined)])
                if isinstance(outcome, Exception):
                    raise outcome

    async def project_opening(event: EventT) -> None:
        opened = DeliveryOpened.model_validate(orjson.loads(event.value))
        await asyncio.to_thread(services.project.opened, opened)

    @app.agent(raw_topic(TASKS_STATUS_CHANGED.name), name="project_status_changes")
    async def project_status_changes(stream: StreamT) -> None:
        await each_event(app, services, "project_status_changes", stream, project_status_change)

    @app.agent(raw_topic(DELIVERIES_OPENED.name), name="project_openings")
    async def project_openings(stream: StreamT) -> None:
        await each_event(app, services, "project_openings", stream, project_opening)
