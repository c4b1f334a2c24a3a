"""Composition root: settings -> adapters -> services, for the API process and the worker process."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from fastapi import FastAPI

from hub.adapters.apikey import ApiKeyStore
from hub.adapters.clock import SystemClock
from hub.adapters.db import create_schema, make_engine
from hub.adapters.kafka import KafkaPublisher, broker_reachable
from hub.adapters.readmodel import SqlReadModel
from hub.adapters.router import AddressedRouter
from hub.agents import project_events, route_referrals
from hub.agents.app import make_app
from hub.agents.pipeline import PipelineServices
from hub.api.app import create_app
from hub.api.deps import ApiServices
from hub.services.projection import Project
from hub.services.query import Queries
from hub.services.routing import RouteReferral
from hub.services.submission import SubmitReferral
from hub.services.task import TransitionTask
from hub.settings import Settings, load_settings


def build_engine(settings: Settings) -> Any:
    engine = make_engine(settings.resolved_database_url(), settings.database.echo)
    create_schema(engine)
    return engine


def build_api(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    engine = build_engine(settings)
    clock = SystemClock()
    read_model = SqlReadModel(engine)
    publisher = KafkaPublisher(settings.kafka)
    keys = ApiKeyStore(engine)

    async def health() -> dict[str, str]:
        broker = await asyncio.to_thread(broker_reachable, settings.kafka.bootstrap)
        try:
            await asyncio.to_thread(read_model.ping)
            db = "ok"
        except Exception:
            db = "unreachable"
        return {"broker": "ok" if broker else "unreachable", "database": db}

    services = ApiServices(
        submit=SubmitReferral(publisher, clock, settings.topic),
        transition=TransitionTask(read_model, publisher, clock, settings.topic),
        queries=Queries(read_model),
        authenticate=keys.authenticate,
        health=health,
    )
    return create_app(
        services,
        max_body_bytes=settings.api.max_body_bytes,
        on_startup=publisher.start,
        on_shutdown=publisher.stop,
    )


def api_factory() -> FastAPI:
    """Entry for `uvicorn --factory hub.bootstrap:api_factory`."""
    return build_api()


def build_worker(settings: Settings | None = None) -> faust.App:
    settings = settings or load_settings()
    engine = build_engine(settings)
    clock = SystemClock()
    services = PipelineServices(
        route=RouteReferral(AddressedRouter(), clock),
        project=Project(SqlReadModel(engine)),
        clock=clock,
        topic_name=settings.topic,
    )
    app = make_app(settings)
    route_referrals.register(app, services)
    project_events.register(app, services)
    return app
