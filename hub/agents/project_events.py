"""Stream steps: project deliveries, status changes and openings into the read model (idempotent)."""

from __future__ import annotations

import asyncio

import faust
import orjson

from hub.agents.deadletter import send_dead_letter
from hub.agents.metrics import timed
from hub.agents.pipeline import PipelineServices
from hub.agents.route_referrals import route_and_send
from schemas.audit import transition_event
from schemas.envelope import DeliveryCreated, DeliveryOpened, TaskStatusChanged
from schemas.topic import DELIVERIES_CREATED, DELIVERIES_OPENED, FOLLOWUPS_CHANGED, TASKS_STATUS_CHANGED


def register(app: faust.App, services: PipelineServices) -> None:
    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(services.topic_name(name), value_serializer="raw", key_serializer="raw")

    @app.agent(raw_topic(DELIVERIES_CREATED.name), name="project_deliveries")
    async def project_deliveries(stream: faust.Stream) -> None:
        async for event in stream.events():
            try:
                with timed("project_deliveries"):
                    delivery = DeliveryCreated.model_validate(orjson.loads(event.value))
                    await asyncio.to_thread(services.project.delivery, delivery)
            except Exception as exc:  # dead-letter, never block the partition
                await send_dead_letter(app, services, "project_deliveries", event, exc)

    @app.agent(raw_topic(TASKS_STATUS_CHANGED.name), name="project_status_changes")
    async def project_status_changes(stream: faust.Stream) -> None:
        async for event in stream.events():
            try:
                with timed("project_status_changes"):
                    change = TaskStatusChanged.model_validate(orjson.loads(event.value))
                    await asyncio.to_thread(services.project.status, change)
                    await services.audit.record(transition_event(change))
                    if change.to_status == "completed":
                        topic = services.topic_name(FOLLOWUPS_CHANGED.name)
                        for scheduled in await asyncio.to_thread(services.schedule_followups, change):
                            await services.publisher.publish(topic, scheduled.referral_id, scheduled)
                    if change.to_status == "rejected":
                        # A declined referral goes to the next recipient of its pathway.
                        intake, declined = await asyncio.to_thread(
                            services.project.reroute_context, change.referral_id
                        )
                        if intake is not None:
                            await route_and_send(app, services, intake, declined)
            except Exception as exc:  # dead-letter, never block the partition
                await send_dead_letter(app, services, "project_status_changes", event, exc)

    @app.agent(raw_topic(DELIVERIES_OPENED.name), name="project_openings")
    async def project_openings(stream: faust.Stream) -> None:
        async for event in stream.events():
            try:
                with timed("project_openings"):
                    opened = DeliveryOpened.model_validate(orjson.loads(event.value))
                    await asyncio.to_thread(services.project.opened, opened)
            except Exception as exc:  # dead-letter, never block the partition
                await send_dead_letter(app, services, "project_openings", event, exc)
