"""Services the stream steps call, handed in by bootstrap (agents never build adapters)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hub.services.port import Clock
from hub.services.projection import Project
from hub.services.routing import RouteReferral


@dataclass(frozen=True)
class PipelineServices:
    route: RouteReferral
    project: Project
    clock: Clock
    topic_name: Callable[[str], str]  # applies the configured prefix
    accept_inbound: Callable[[Any], Awaitable[Any]]  # AcceptInbound
