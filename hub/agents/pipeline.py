"""Services the stream steps call, handed in by bootstrap (agents never build adapters)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from hub.services.consent import ApplyConsentChange
from hub.services.port import Clock, EventPublisher, UnitOfWork
from hub.services.projection import Project
from hub.services.routing import RouteReferral
from hub.services.sla import MonitorSla, ScheduleFollowUps


@dataclass(frozen=True)
class PipelineServices:
    route: RouteReferral
    project: Project
    clock: Clock
    topic_name: Callable[[str], str]  # applies the configured prefix
    accept_inbound: Callable[[Any], Awaitable[Any]]  # AcceptInbound
    publisher: EventPublisher
    monitor_sla: MonitorSla
    schedule_followups: ScheduleFollowUps
    apply_consent: ApplyConsentChange
    # Projections of SLA, follow-up and withdrawal events (SqlSla / SqlConsents)
    record_escalation: Callable[[Any], bool]
    record_follow_up: Callable[[Any], bool]
    record_withdrawal: Callable[[Any], bool]
    audit: Any  # RecordAudit: publishes AuditEvents on audit.events
    reload_rules: Callable[[], Any]  # RuleSetHolder.reload_if_changed -> ReloadOutcome | None
    # The routing batch's consent lookup, seal storage and projection share one transaction.
    unit_of_work: UnitOfWork = nullcontext
    sla_check_seconds: float = 30.0
    route_linger_s: float = 0.005  # settings.worker.route_linger_s
    rules_reload_seconds: float = 10.0
