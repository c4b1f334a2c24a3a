"""Stream steps: the SLA monitor (a timer over persisted deadlines) and escalation/follow-up projections."""

from __future__ import annotations

import asyncio
import logging

import faust
import orjson
from faust.types import EventT, StreamT

from hub.agents.consume import each_event
from hub.agents.metrics import ESCALATIONS
from hub.agents.pipeline import PipelineServices
from schemas.envelope import FollowUpChanged, SlaEscalated
from schemas.topic import FOLLOWUPS_CHANGED, SLA_ESCALATIONS

log = logging.getLogger(__name__)


def register(app: faust.App, services: PipelineServices) -> None:
    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(services.topic_name(name), value_serializer="raw", key_serializer="raw")

    @app.timer(interval=services.sla_check_seconds, name="monitor_sla", on_leader=True)
    async def monitor_sla() -> None:
        # One worker of the group (faust's leader) scans the deadlines. Escalation ids are
        # deterministic, so a pass repeated across a change of leader collapses on projection.
        try:
            events = await asyncio.to_thread(services.monitor_sla.due)
            await services.monitor_sla.publish(events)
            for e in events:
                ESCALATIONS.labels(e.kind, str(e.level)).inc()
        except Exception as exc:  # a failed pass is retried at the next tick; the deadlines persist
            log.warning("sla pass failed", extra={"error": type(exc).__name__})

    async def project_escalation(event: EventT) -> None:
        escalation = SlaEscalated.model_validate(orjson.loads(event.value))
        await asyncio.to_thread(services.record_escalation, escalation)

    async def project_follow_up(event: EventT) -> None:
        change = FollowUpChanged.model_validate(orjson.loads(event.value))
        await asyncio.to_thread(services.record_follow_up, change)

    @app.agent(raw_topic(SLA_ESCALATIONS.name), name="project_escalations")
    async def project_escalations(stream: StreamT) -> None:
        await each_event(app, services, "project_escalations", stream, project_escalation)

    @app.agent(raw_topic(FOLLOWUPS_CHANGED.name), name="project_follow_ups")
    async def project_follow_ups(stream: StreamT) -> None:
        await each_event(app, services, "project_follow_ups", stream, project_follow_up)
