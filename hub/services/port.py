"""Ports: the Protocols use cases depend on; adapters implement them, bootstrap wires them."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from schemas.envelope import (
    DeliveryCreated,
    DeliveryOpened,
    Envelope,
    ReferralFacts,
    ReferralSubmitted,
    TaskStatusChanged,
)


class EventPublisher(Protocol):
    async def publish(self, topic: str, key: str, event: Envelope) -> None:
        """Send and wait until the broker acknowledged (acks=all)."""


class Clock(Protocol):
    def now(self) -> datetime: ...


class UnitOfWork(Protocol):
    def __call__(self) -> AbstractContextManager[object]:
        """A block whose repository writes commit together, or not at all if it raises."""


@dataclass(frozen=True)
class PlannedRoute:
    """One recipient chosen by routing, before consent and sealing."""

    recipient_org: str
    recipient_type: str
    purpose: str
    legal_basis: str
    priority: str
    rule_id: str
    ack_due: datetime | None = None
    first_contact_due: datetime | None = None
    categories: tuple[str, ...] = ()
    decide_due: datetime | None = None
    escalation: tuple[str, ...] = ()  # organisation ids, or "role:<name>" at the recipient


@dataclass(frozen=True)
class RoutingPlan:
    routes: list[PlannedRoute]
    ruleset_version: str
    explanation: list[dict[str, Any]]
    matched: bool = True


class Router(Protocol):
    def plan(self, facts: ReferralFacts, now: datetime, declined: Sequence[str] = ()) -> RoutingPlan: ...


@dataclass(frozen=True)
class DeliveryRow:
    delivery_id: str
    task_id: str
    referral_id: str
    recipient_org: str
    sender_org: str
    status: str
    business_status: str | None
    version: int


@dataclass(frozen=True)
class Refusal:
    """A recipient the rules chose but no legal basis allowed (the referrer sees it)."""

    event_id: str
    referral_id: str
    recipient_org: str
    reason_code: str
    at: datetime


class ReadModel(Protocol):
    def record_status(self, event: TaskStatusChanged) -> bool: ...

    def delivery_by_task(self, task_id: str) -> DeliveryRow | None: ...

    def inbox(self, org_id: str, status: str | None, limit: int, offset: int) -> list[dict[str, Any]]: ...

    def referral(self, referral_id: str) -> dict[str, Any] | None: ...

    def timeline(self, referral_id: str) -> list[dict[str, Any]]: ...

    def deliveries_of(self, referral_id: str) -> list[dict[str, Any]]: ...

    def intake_of(self, referral_id: str) -> ReferralSubmitted | None: ...

    def declined_orgs(self, referral_id: str) -> list[str]: ...

    def record_opened(self, event: DeliveryOpened) -> bool: ...

    def record_routed(
        self,
        referrals: Sequence[tuple[ReferralSubmitted, datetime, str]],
        refusals: Sequence[Refusal],
        deliveries: Sequence[DeliveryCreated],
    ) -> int:
        """Referrals (event, routed at, rule-set version), refusals and deliveries of a batch of
        routing decisions, in one transaction and idempotently; returns the deliveries new here."""


@dataclass(frozen=True)
class Caller:
    """Who is calling: an agency system (API key) or, later, a staff user."""

    org_id: str
    role: str = "system"
    label: str = ""


@dataclass(frozen=True)
class StoredSeal:
    """A delivery's sealed view as the vault keeps it (base64url strings; wrapped_key None = withdrawn)."""

    delivery_id: str
    referral_id: str
    recipient_org: str
    recipient_key_id: str
    ciphertext: str
    wrapped_key: str | None
    signature: str
    consent_ids: tuple[str, ...]
    created_at: datetime
    first_opened_at: datetime | None = None
    destroyed_at: datetime | None = None


class KeyVault(Protocol):
    def put_many(self, seals: Sequence[StoredSeal]) -> dict[str, StoredSeal]:
        """Store each seal once: delivery id -> the seal that is stored (the first one written)."""

    def get(self, delivery_id: str) -> StoredSeal | None: ...

    def mark_opened(self, delivery_id: str, at: datetime) -> bool: ...

    def destroy(self, delivery_id: str, at: datetime, reason: str) -> bool: ...

    def unopened_under_consent(self, consent_id: str) -> list[StoredSeal]: ...
