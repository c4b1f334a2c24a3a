"""Audit events (BALP-style: who, what, when, why, on which basis, with what outcome): ids and codes only.

An ``AuditEvent`` travels on ``audit.events`` and is stored hash-chained; it must never carry PII, so
every free-form field is constrained to an id or a code (no spaces, no CJK), and names never appear.
The ``*_event`` helpers map the pipeline's envelopes to audit events with deterministic ids, so a
redelivered pipeline event yields the same audit event and the chain stores it once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field, field_validator

from schemas.canonical import CS_DATA_CATEGORY, CS_LEGAL_BASIS, CS_PURPOSE
from schemas.codesystem import terminology
from schemas.envelope import DeliveryCreated, DeliveryOpened, Envelope, TaskStatusChanged

# Ids: organisation ids, uuids, task ids, key ids, rule ids, hashes. Codes: lower-case vocabulary.
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")]
Code = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[a-z0-9][a-z0-9._:-]*$")]

# uuid5 namespace of audit event ids derived from pipeline events (fixed forever: ids must not change).
AUDIT_NAMESPACE = uuid.UUID("6f0d7a52-4a3c-5f1e-9c1b-6a7d2e0b9a11")


class AuditType(StrEnum):
    """What kind of thing happened (BALP pattern in brackets)."""

    DISCLOSURE = "disclosure"  # data sent to a recipient [Disclosure / PHI export]
    ACCESS = "access"  # a recipient opened or read data [Read]
    TRANSITION = "transition"  # a referral task changed status [Update]
    CONSENT_CHANGE = "consent-change"  # consent recorded, revoked; deliveries withdrawn under it
    RULE_CHANGE = "rule-change"  # a routing rule set loaded or changed
    KEY_CHANGE = "key-change"  # a key generated, rotated, retired, destroyed
    BREAK_GLASS = "break-glass"  # emergency access without consent
    LOGIN = "login"  # a user or client authenticated (or failed to)
    QUERY = "query"  # someone searched records (auditors included) [Query]


class AuditAction(StrEnum):
    """FHIR AuditEvent.action: create, read, update, delete, execute."""

    C = "C"
    R = "R"
    U = "U"
    D = "D"
    E = "E"


class AuditSource(StrEnum):
    """The hub component that observed the event."""

    API = "api"
    WORKER = "worker"
    CLI = "cli"


class OutcomeCode(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


class AuditOutcome(Envelope):
    code: OutcomeCode = OutcomeCode.SUCCESS
    reason: Code | None = None  # a stable code, e.g. a HubError code; never a free-text message


class AuditAgent(Envelope):
    """Who acted: an organisation, a role in it, and a staff user id (never a name)."""

    org_id: Id
    role: Code = "system"
    user_id: Id | None = None


class AuditEntity(Envelope):
    """What was acted upon. Only the fields that apply are set."""

    referral_id: Id | None = None
    delivery_id: Id | None = None
    task_id: Id | None = None
    consent_id: Id | None = None
    # The other organisation involved: a disclosure's recipient, an access notice's referrer.
    org_id: Id | None = None
    categories: list[Code] = Field(default_factory=list)
    ruleset_version: Id | None = None
    rule_id: Id | None = None
    key_id: Id | None = None
    from_status: Code | None = None
    to_status: Code | None = None
    detail: Code | None = None  # e.g. the business status, or what a key change did (rotated)

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        known = terminology().system(CS_DATA_CATEGORY).codes()
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown data categories {unknown}")
        return sorted(set(value))  # one canonical form, whatever order the producer used


class AuditEvent(Envelope):
    """One audit record; the event on ``audit.events`` and the unit of the hash chain."""

    event_id: Id
    type: AuditType
    action: AuditAction
    recorded: AwareDatetime
    outcome: AuditOutcome = Field(default_factory=AuditOutcome)
    agent: AuditAgent
    source: AuditSource
    entity: AuditEntity = Field(default_factory=AuditEntity)
    purpose: Code | None = None
    legal_basis: Code | None = None

    @field_validator("recorded")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("purpose")
    @classmethod
    def _known_purpose(cls, value: str | None) -> str | None:
        if value is not None and value not in terminology().system(CS_PURPOSE):
            raise ValueError(f"unknown purpose {value!r}")
        return value

    @field_validator("legal_basis")
    @classmethod
    def _known_basis(cls, value: str | None) -> str | None:
        if value is not None and value not in terminology().system(CS_LEGAL_BASIS):
            raise ValueError(f"unknown legal basis {value!r}")
        return value


def derived_event_id(kind: AuditType, source_event_id: str) -> str:
    """The audit event id of a pipeline event: the same input always gives the same id."""
    return str(uuid.uuid5(AUDIT_NAMESPACE, f"{kind.value}:{source_event_id}"))


def disclosure_event(delivery: DeliveryCreated, source: AuditSource = AuditSource.WORKER) -> AuditEvent:
    """The hub disclosed a minimised, sealed copy of a referral to a recipient."""
    return AuditEvent(
        event_id=derived_event_id(AuditType.DISCLOSURE, delivery.event_id),
        type=AuditType.DISCLOSURE,
        action=AuditAction.C,
        recorded=delivery.created_at,
        agent=AuditAgent(org_id="hub", role="system"),
        source=source,
        entity=AuditEntity(
            referral_id=delivery.referral_id,
            delivery_id=delivery.delivery_id,
            task_id=delivery.task_id,
            org_id=delivery.recipient_org,
            categories=list(delivery.categories),
            ruleset_version=delivery.ruleset_version,
            rule_id=delivery.rule_id,
            key_id=delivery.view_key_id or None,
        ),
        purpose=delivery.purpose,
        legal_basis=delivery.legal_basis,
    )


def transition_event(change: TaskStatusChanged, source: AuditSource = AuditSource.WORKER) -> AuditEvent:
    """A referral task moved from one status to another (the reason text stays in the read model)."""
    return AuditEvent(
        event_id=derived_event_id(AuditType.TRANSITION, change.event_id),
        type=AuditType.TRANSITION,
        action=AuditAction.U,
        recorded=change.at,
        agent=AuditAgent(org_id=change.actor_org, role=change.actor_role),
        source=source,
        entity=AuditEntity(
            referral_id=change.referral_id,
            delivery_id=change.delivery_id,
            task_id=change.task_id,
            from_status=change.from_status,
            to_status=change.to_status,
            detail=change.business_status,
        ),
    )


def access_event(opened: DeliveryOpened, source: AuditSource = AuditSource.API) -> AuditEvent:
    """A recipient opened a delivery (the referrer is told separately: the access notice)."""
    return AuditEvent(
        event_id=derived_event_id(AuditType.ACCESS, opened.event_id),
        type=AuditType.ACCESS,
        action=AuditAction.R,
        recorded=opened.at,
        agent=AuditAgent(
            org_id=opened.recipient_org, role=opened.opened_by_role, user_id=opened.opened_by_user
        ),
        source=source,
        entity=AuditEntity(
            referral_id=opened.referral_id,
            delivery_id=opened.delivery_id,
            task_id=opened.task_id,
            org_id=opened.sender_org,
            detail="first-open" if opened.first else "reopen",
        ),
    )
