"""Stream steps: project deliveries and status changes into the read model (idempotent)."""

from __future__ import annotations

import asyncio

import faust
import orjson

from hub.agents.deadletter import send_dead_letter
from hub.agents.pipeline import PipelineServices
from schemas.envelope import DeliveryCreated, TaskStatusChanged
from schemas.topic import DELIVERIES_CREATED, TASKS_STATUS_CHANGED


def register(app: faust.App, services: PipelineServices) -> None:
    deliveries = app.topic(
        services.topic_name(DELIVERIES_CREATED.name), value_serializer="raw", key_serializer="raw"
    )
    statuses = app.topic(
        services.topic_name(TASKS_STATUS_CHANGED.name), value_serializer="raw", key_serializer="raw"
    )

    @app.agent(deliveries, name="project_deliveries")
    async def project_deliveries(stream: faust.Stream) -> None:
        async for event in stream.events():
            try:
                delivery = DeliveryCreated.model_validate(orjson.loads(event.value))
                await asyncio.to_thread(services.project.delivery, delivery)
            except Exception as exc:  # dead-letter, never block the partition
                await send_dead_letter(app, services, "project_deliveries", event, exc)

    @app.agent(statuses, name="project_status_changes")
    async def project_status_changes(stream: faust.Stream) -> None:
        async for event in stream.events():
            try:
                change = TaskStatusChanged.model_validate(orjson.loads(event.value))
                await asyncio.to_thread(services.project.status, change)
            except Exception as exc:  # dead-letter, never block the partition
                await send_dead_letter(app, services, "project_status_changes", event, exc)
