"""Composition root: settings -> adapters -> services, for the API process and the worker process."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import faust
from fastapi import FastAPI

from hub.adapters.apikey import ApiKeyStore
from hub.adapters.auditstore import SqlAuditStore
from hub.adapters.clock import SystemClock
from hub.adapters.consentsql import SqlConsents
from hub.adapters.db import UnitOfWork, create_schema, make_engine
from hub.adapters.directory import load_directory
from hub.adapters.kafka import KafkaPublisher, broker_reachable
from hub.adapters.readmodel import SqlReadModel
from hub.adapters.rules import RuleSetHolder, RulesRouter
from hub.adapters.sealing import HubSealing, SubmissionVerifier, open_or_initialise
from hub.adapters.slasql import SqlSla
from hub.adapters.vault import SqlKeyVault
from hub.adapters.workcalendar import ChinaWorkCalendar
from hub.agents import (
    accept_inbound,
    apply_consents,
    chain_audit,
    monitor_sla,
    project_events,
    route_referrals,
)
from hub.agents import metrics as worker_metrics
from hub.agents.app import make_app
from hub.agents.chain_audit import AuditChainServices
from hub.agents.pipeline import PipelineServices
from hub.agents.publisher import FaustPublisher
from hub.api.app import create_app
from hub.api.deps import ApiServices
from hub.api.routes.followup import LifecycleServices
from hub.domain.sla import SlaPolicy
from hub.services.audit import AppendToChain, RecordAudit
from hub.services.consent import ApplyConsentChange, CurrentConsents, SubmitConsentUpdate
from hub.services.crypto_port import HUB_OWNER, KeyKind
from hub.services.disclosure import ConsentDisclosure
from hub.services.port import KeyVault
from hub.services.projection import Project
from hub.services.query import Queries
from hub.services.routing import RouteReferral
from hub.services.sla import MonitorSla, RecordFollowUp, ScheduleFollowUps
from hub.services.submission import AcceptInbound, SubmitReferral
from hub.services.task import TransitionTask
from hub.settings import Settings, load_settings
from schemas.policy import default_disclosure_policy


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
    api_keys = ApiKeyStore(engine)

    async def health() -> dict[str, str]:
        broker = await asyncio.to_thread(broker_reachable, settings.kafka.bootstrap)
        try:
            await asyncio.to_thread(read_model.ping)
            db = "ok"
        except Exception:
            db = "unreachable"
        return {"broker": "ok" if broker else "unreachable", "database": db}

    keys = open_or_initialise(settings.keys)
    sealing = HubSealing(keys, settings.keys.demo_custody)
    verifier = SubmissionVerifier(keys) if settings.api.require_signatures else None
    services = ApiServices(
        submit=SubmitReferral(publisher, clock, settings.topic, sealing, verifier),
        transition=TransitionTask(read_model, publisher, clock, settings.topic, notes=sealing),
        queries=Queries(read_model, sealing.open_note),
        authenticate=api_keys.authenticate_async,
        health=health,
        **staff_services(settings, engine, read_model, publisher, clock, keys, sealing),
    )
    app = create_app(
        services,
        max_body_bytes=settings.api.max_body_bytes,
        on_startup=publisher.start,
        on_shutdown=publisher.stop,
    )
    sla_store = SqlSla(engine)
    app.state.lifecycle = LifecycleServices(
        record_follow_up=RecordFollowUp(sla_store, publisher, clock, settings.topic),
        submit_consent=SubmitConsentUpdate(publisher, clock, settings.topic),
        follow_ups_of=sla_store.follow_ups_of,
        escalations_of=sla_store.escalations_of,
    )
    return app


def staff_services(
    settings: Settings, engine: Any, read_model: Any, publisher: Any, clock: Any, keys: Any, sealing: Any
) -> dict[str, Any]:
    """Staff sign-in, worklists, dashboard metrics, opening deliveries, audit queries (issue 6)."""
    from datetime import timedelta

    from hub.adapters.auditstore import SqlAuditStore
    from hub.adapters.breakglasssql import SqlBreakGlassStore
    from hub.adapters.crypto import Ed25519Verifier
    from hub.adapters.listingsql import DirectoryReader, SqlListing
    from hub.adapters.metricsql import SqlMetricSource
    from hub.adapters.user import Argon2Hasher, SqlLoginAttempts, SqlSessionStore, SqlUserRepository
    from hub.adapters.user import create_tables as create_user_tables
    from hub.services.access import OpenDelivery
    from hub.services.audit import AuditQueries, RecordAudit, hub_signature_check
    from hub.services.breakglass import BreakGlassReviews
    from hub.services.identity import IdentityService, SessionPolicy
    from hub.services.listing import Listings
    from hub.services.metric import DashboardMetrics
    from hub.services.throttle import TokenBucketLimiter
    from schemas.audit import access_event

    create_user_tables(engine)
    auth = settings.auth
    record_audit = RecordAudit(publisher, settings.topic)

    async def audit_access(opened: Any) -> None:
        await record_audit.record(access_event(opened))

    return {
        "identity": IdentityService(
            SqlUserRepository(engine),
            SqlSessionStore(engine),
            SqlLoginAttempts(engine),
            Argon2Hasher(),
            clock,
            policy=SessionPolicy(
                idle=timedelta(minutes=auth.session_idle_minutes),
                absolute=timedelta(hours=auth.session_hours),
                max_failures=auth.login_max_failures,
                failure_window=timedelta(minutes=auth.login_window_minutes),
            ),
        ),
        "listings": Listings(
            SqlListing(engine), DirectoryReader(engine, settings.rules.directory_file), clock
        ),
        "metrics": DashboardMetrics(SqlMetricSource(engine), clock),
        "open_delivery": OpenDelivery(
            read_model,
            SqlKeyVault(engine),
            sealing.open_delivery,
            publisher,
            clock,
            settings.topic,
            audit_access,
        ),
        "break_glass": BreakGlassReviews(SqlBreakGlassStore(engine), record_audit, clock),
        "submit_limiter": TokenBucketLimiter(settings.api.submit_rate_per_s, settings.api.submit_burst),
        "cookie_secure": auth.cookie_secure,
        "audit": AuditQueries(
            SqlAuditStore(engine), hub_signature_check(Ed25519Verifier(keys.public_registry()))
        ),
    }


def api_factory() -> FastAPI:
    """Entry for `uvicorn --factory hub.bootstrap:api_factory`."""
    return build_api()


def build_router(settings: Settings) -> RulesRouter:
    """The district's rules over the directory; refuses to start on an invalid rule set."""
    holder = RuleSetHolder(settings.rules.dir, load_directory(settings.rules.directory_file))
    return RulesRouter(holder, ChinaWorkCalendar.from_file(settings.rules.calendar_file))


def build_route(
    settings: Settings,
    engine: Any,
    sealing: HubSealing,
    vault: KeyVault | None = None,
    router: RulesRouter | None = None,
) -> RouteReferral:
    """The routing use case on ``engine``: the district's rules, the consents in the database, the
    default disclosure policy, and the key vault (``vault`` replaces it, e.g. in a benchmark)."""
    return RouteReferral(
        router or build_router(settings),
        SystemClock(),
        opener=sealing,
        disclosure=ConsentDisclosure(default_disclosure_policy(), CurrentConsents(SqlConsents(engine))),
        sealing=sealing,
        vault=SqlKeyVault(engine) if vault is None else vault,
    )


def build_worker(settings: Settings | None = None) -> faust.App:
    settings = settings or load_settings()
    engine = build_engine(settings)
    clock = SystemClock()
    hub_keys = open_or_initialise(settings.keys)
    hub_keys.ensure(HUB_OWNER, KeyKind.ED25519)
    sealing = HubSealing(hub_keys, settings.keys.demo_custody)
    app = make_app(settings)
    publisher = FaustPublisher(app)
    verifier = SubmissionVerifier(hub_keys) if settings.api.require_signatures else None
    submit = SubmitReferral(publisher, clock, settings.topic, sealing, verifier)
    router = build_router(settings)
    vault = SqlKeyVault(engine)
    consent_state = SqlConsents(engine)
    sla_store = SqlSla(engine, router.holder.directory)
    services = PipelineServices(
        route=build_route(settings, engine, sealing, vault=vault, router=router),
        project=Project(SqlReadModel(engine)),
        clock=clock,
        topic_name=settings.topic,
        accept_inbound=AcceptInbound(sealing, submit),
        publisher=publisher,
        monitor_sla=MonitorSla(
            sla_store,
            publisher,
            clock,
            settings.topic,
            SlaPolicy(reminder_fraction=settings.sla.reminder_fraction),
        ),
        schedule_followups=ScheduleFollowUps(
            sla_store, [timedelta(days=d) for d in settings.sla.followup_offsets_days]
        ),
        apply_consent=ApplyConsentChange(consent_state, vault, consent_state, clock),
        record_escalation=sla_store.record_escalation,
        record_follow_up=sla_store.record_follow_up,
        record_withdrawal=consent_state.record_withdrawal,
        audit=RecordAudit(publisher, settings.topic),
        reload_rules=router.holder.reload_if_changed,
        unit_of_work=UnitOfWork(engine),
        sla_check_seconds=settings.sla.check_seconds,
        route_linger_s=settings.worker.route_linger_s,
        rules_reload_seconds=settings.rules.reload_seconds,
    )
    worker_metrics.serve(app, settings.worker.metrics_port)
    # Both roles route: the routing step, and re-routing after a decline (project_events).
    route_referrals.register_rules_reload(app, services)
    role = settings.worker.role
    if role in ("all", "routing"):
        accept_inbound.register(app, services)
        route_referrals.register(app, services)
    if role in ("all", "downstream"):
        project_events.register(app, services)
        monitor_sla.register(app, services)
        apply_consents.register(app, services)
        chain_audit.register(
            app,
            AuditChainServices(
                append=AppendToChain(SqlAuditStore(engine), hub_keys.signer(HUB_OWNER), clock),
                clock=clock,
                topic_name=settings.topic,
                linger_s=settings.worker.audit_linger_s,
            ),
        )
    return app
