"""Compact internal messages that travel between pipeline steps (plain pydantic, orjson-friendly).

The FHIR Bundle is validated once at the edge; from then on only these envelopes move. They carry no
readable PII: identity and contact data stay inside the sealed payloads.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum, StrEnum

from pydantic import BaseModel, ConfigDict, Field


class AgencyType(StrEnum):
    SCHOOL = "school"
    CAMHS = "camhs"
    POLICE = "police"
    PROCURATORATE = "procuratorate"
    CIVIL_AFFAIRS = "civil-affairs"
    STREET_CENTRE = "street-centre"
    DISTRICT_CENTRE = "district-centre"
    DISTRICT_OFFICE = "district-office"


AGENCY_TYPES: frozenset[str] = frozenset(a.value for a in AgencyType)


class RiskLevel(IntEnum):
    ATTENTION = 1
    ELEVATED = 2
    HIGH = 3
    CRISIS = 4


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConsentSummary(Envelope):
    """What a consent allows, without the guardian's identity."""

    consent_id: str
    status: str  # active | inactive (revoked) | proposed | rejected
    grantor: str  # guardian | student | both
    recipients: list[str] = Field(default_factory=list)  # agency types or organisation ids
    categories: list[str] = Field(default_factory=list)
    purposes: list[str] = Field(default_factory=list)
    start: datetime | None = None
    end: datetime | None = None
    student_assent: bool = False


class ReferralFacts(Envelope):
    """De-identified facts about a referral: what routing, SLAs and metrics need."""

    source_org: str
    source_type: AgencyType
    reasons: list[str]
    risk_level: RiskLevel
    priority: str  # FHIR request priority: routine | urgent | asap | stat
    age: int | None = None
    gender: str | None = None
    town: str | None = None
    school: str | None = None
    grade: str | None = None
    requested_recipient: str | None = None  # organisation id the sender asked for, if any
    consents: list[ConsentSummary] = Field(default_factory=list)
    legal_basis_claimed: str | None = None  # consent | statutory | emergency
    # What the scale scores and reasons suggest under the default mapping (DESIGN §6); the sender's
    # risk_level stays authoritative, rules may escalate on a higher suggestion.
    suggested_risk_level: RiskLevel | None = None
    safety_assessment_due: bool = False  # PHQ-9 item 9 above 0: same-day safety assessment


class ReferralSubmitted(Envelope):
    """Event on ``referrals.submitted``: a Bundle passed the edge and was accepted (202)."""

    event_id: str
    referral_id: str
    idempotency_key: str
    submitted_at: datetime
    student_pseudonym: str
    facts: ReferralFacts
    # The validated Bundle, sealed for the hub itself; base64 of the sealed bytes (never plain PII).
    sealed_bundle: str = ""
    bundle_key_id: str = ""


class DeliveryCreated(Envelope):
    """Event on ``deliveries.created``: one recipient's minimised, sealed copy of a referral."""

    event_id: str
    delivery_id: str
    referral_id: str
    task_id: str
    recipient_org: str
    recipient_type: AgencyType
    sender_org: str
    purpose: str
    legal_basis: str
    categories: list[str]
    priority: str
    risk_level: RiskLevel
    reasons: list[str]
    rule_id: str
    ruleset_version: str
    created_at: datetime
    ack_due: datetime | None = None
    first_contact_due: datetime | None = None
    decide_due: datetime | None = None
    escalation: list[str] = Field(default_factory=list)
    sealed_view: str = ""  # base64 ciphertext of the minimised view for the recipient
    view_key_id: str = ""
    town: str | None = None


class TaskStatusChanged(Envelope):
    """Event on ``tasks.status-changed``: a lifecycle transition the hub accepted."""

    event_id: str
    task_id: str
    referral_id: str
    delivery_id: str
    from_status: str
    to_status: str
    business_status: str | None = None
    reason: str | None = None
    actor_org: str
    actor_role: str = "system"
    at: datetime
    # Feedback to the referrer (free text): sealed for the referring organisation, never readable here.
    sealed_feedback: str = ""


class DeadLetter(Envelope):
    """Event on ``deadletters``: a record a step could not process, with why and where it came from.

    ``original`` is the record exactly as consumed (base64); intake records hold only sealed payloads,
    so a dead letter never exposes readable PII.
    """

    event_id: str
    step: str
    source_topic: str
    partition: int
    offset: int
    key: str | None
    reason_code: str
    reason: str
    at: datetime
    original: str
    replayed: bool = False


class DeliveryOpened(Envelope):
    """Event on ``deliveries.opened``: a recipient opened a delivery (the referrer is told: CP-IS style)."""

    event_id: str
    delivery_id: str
    referral_id: str
    task_id: str
    recipient_org: str
    sender_org: str
    opened_by_role: str
    opened_by_user: str | None = None  # staff user id (no name), None for a system client
    first: bool = True
    at: datetime


class InboundSubmission(Envelope):
    """Record on ``referrals.inbound``: a connector's submission straight to Kafka (no HTTP edge).

    The connector seals the exact Bundle bytes for the hub (``sealed_bundle`` is the packed
    ``ciphertext.wrapped_key`` token) and signs those bytes; the hub's intake step opens, verifies the
    signature against the sender's registered key, validates the profile and then treats it exactly
    like an HTTP submission. Key = the sender organisation id.
    """

    submission_id: str  # connector-chosen, unique per record (its outbox id)
    sender_org: str
    sealed_bundle: str
    bundle_key_id: str  # the hub key it was sealed for
    signature: str  # ed25519:<kid>:<b64url> over the exact Bundle bytes, purpose "submission"
    sent_at: datetime


class SlaEscalated(Envelope):
    """Event on ``sla.escalations``: a deadline neared (level 0, reminder) or passed (level 1+)."""

    event_id: str  # deterministic: <delivery or follow-up id>:<kind>:<level>
    subject_id: str  # the delivery id, or the follow-up id
    referral_id: str
    task_id: str | None = None
    owner_org: str  # whose deadline it is
    kind: str  # ack | decide | first-contact | follow-up
    level: int  # 0 reminder, 1 the agency's supervisor, 2 the district centre, 3 the district office
    notify: str  # organisation id or "role:<name>" told at this level
    due_at: datetime
    at: datetime


class FollowUpChanged(Envelope):
    """Event on ``followups.changed``: follow-up visits scheduled after completion, or recorded done."""

    event_id: str
    followup_id: str
    referral_id: str
    owner_org: str
    change: str  # scheduled | done
    sequence: int = 0
    due_at: datetime | None = None
    outcome: str | None = None  # done: visited | unreachable | no-concerns (a code, never notes)
    actor_org: str = "hub"
    at: datetime


class ConsentChanged(Envelope):
    """Event on ``consents.changed``: a guardian's consent recorded, updated or revoked."""

    event_id: str
    consent_id: str
    student_pseudonym: str
    status: str  # active | inactive (revoked)
    sender_org: str
    at: datetime
    summary: ConsentSummary | None = None


class DeliveryWithdrawn(Envelope):
    """Event on ``deliveries.withdrawn``: an unopened delivery's key was destroyed (consent revoked)."""

    event_id: str
    delivery_id: str
    referral_id: str
    task_id: str
    recipient_org: str
    consent_id: str
    at: datetime
