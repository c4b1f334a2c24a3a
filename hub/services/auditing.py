"""Audit events for what the pipeline decides beyond deliveries and transitions (ids and codes only)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from schemas.audit import (
    AuditAction,
    AuditAgent,
    AuditEntity,
    AuditEvent,
    AuditOutcome,
    AuditSource,
    AuditType,
    OutcomeCode,
    derived_event_id,
)
from schemas.envelope import ConsentChanged, DeliveryCreated, DeliveryWithdrawn

if TYPE_CHECKING:
    from hub.services.breakglass import BreakGlassReview

HUB = AuditAgent(org_id="hub", role="system")


def refusal_event(
    referral_id: str, recipient_org: str, purpose: str, basis: str, reason_code: str, at: datetime
) -> AuditEvent:
    """No legal basis allowed a disclosure the rules asked for: nothing was sent."""
    return AuditEvent(
        event_id=derived_event_id(AuditType.DISCLOSURE, f"{referral_id}:{recipient_org}:refused"),
        type=AuditType.DISCLOSURE,
        action=AuditAction.C,
        recorded=at,
        outcome=AuditOutcome(code=OutcomeCode.FAILURE, reason=reason_code),
        agent=HUB,
        source=AuditSource.WORKER,
        entity=AuditEntity(referral_id=referral_id, org_id=recipient_org),
        purpose=purpose or None,
        legal_basis=basis or None,
    )


def break_glass_event(delivery: DeliveryCreated) -> AuditEvent:
    """An emergency-basis disclosure: minimum data, time-limited, a supervisor reviews it afterwards."""
    return AuditEvent(
        event_id=derived_event_id(AuditType.BREAK_GLASS, delivery.event_id),
        type=AuditType.BREAK_GLASS,
        action=AuditAction.E,
        recorded=delivery.created_at,
        agent=HUB,
        source=AuditSource.WORKER,
        entity=AuditEntity(
            referral_id=delivery.referral_id,
            delivery_id=delivery.delivery_id,
            org_id=delivery.recipient_org,
            categories=list(delivery.categories),
            rule_id=delivery.rule_id,
            detail="review-required",
        ),
        purpose=delivery.purpose,
        legal_basis="emergency",
    )


def break_glass_review_event(review: BreakGlassReview) -> AuditEvent:
    """A supervisor reviewed an emergency disclosure: justified or not, guardian informed or why not."""
    return AuditEvent(
        event_id=review.audit_event_id,
        type=AuditType.BREAK_GLASS,
        action=AuditAction.U,
        recorded=review.reviewed_at,
        agent=AuditAgent(
            org_id=review.sender_org, role=review.reviewed_by_role, user_id=review.reviewed_by_user
        ),
        source=AuditSource.API,
        entity=AuditEntity(
            referral_id=review.referral_id,
            delivery_id=review.delivery_id,
            org_id=review.recipient_org,
            detail=f"reviewed:{review.outcome}:guardian-{review.guardian_notice}",
        ),
        legal_basis="emergency",
    )


def rule_change_event(version: str, previous: str, ok: bool, at: datetime, issues: int = 0) -> AuditEvent:
    return AuditEvent(
        event_id=derived_event_id(AuditType.RULE_CHANGE, f"{previous}->{version}:{at.isoformat()}"),
        type=AuditType.RULE_CHANGE,
        action=AuditAction.U,
        recorded=at,
        outcome=AuditOutcome(
            code=OutcomeCode.SUCCESS if ok else OutcomeCode.FAILURE,
            reason=None if ok else f"invalid-ruleset-{issues}-issues",
        ),
        agent=HUB,
        source=AuditSource.WORKER,
        entity=AuditEntity(ruleset_version=version, detail="reloaded" if ok else "kept-previous"),
    )


def consent_change_event(change: ConsentChanged) -> AuditEvent:
    return AuditEvent(
        event_id=derived_event_id(AuditType.CONSENT_CHANGE, change.event_id),
        type=AuditType.CONSENT_CHANGE,
        action=AuditAction.U,
        recorded=change.at,
        agent=AuditAgent(org_id=change.sender_org),
        source=AuditSource.WORKER,
        entity=AuditEntity(consent_id=change.consent_id, detail=change.status),
    )


def withdrawal_event(withdrawn: DeliveryWithdrawn) -> AuditEvent:
    return AuditEvent(
        event_id=derived_event_id(AuditType.CONSENT_CHANGE, withdrawn.event_id),
        type=AuditType.CONSENT_CHANGE,
        action=AuditAction.D,
        recorded=withdrawn.at,
        agent=HUB,
        source=AuditSource.WORKER,
        entity=AuditEntity(
            referral_id=withdrawn.referral_id,
            delivery_id=withdrawn.delivery_id,
            task_id=withdrawn.task_id or None,
            consent_id=withdrawn.consent_id,
            org_id=withdrawn.recipient_org,
            detail="delivery-withdrawn",
        ),
    )


def key_change_event(owner: str, kind: str, key_id: str, action: str, at: datetime) -> AuditEvent:
    """A key generated or rotated (the key id only; key material never leaves the store)."""
    return AuditEvent(
        event_id=derived_event_id(AuditType.KEY_CHANGE, f"{owner}:{kind}:{key_id}:{action}"),
        type=AuditType.KEY_CHANGE,
        action=AuditAction.C if action == "generated" else AuditAction.U,
        recorded=at,
        agent=AuditAgent(org_id="hub", role="admin"),
        source=AuditSource.CLI,
        entity=AuditEntity(
            org_id=owner if owner != "hub" else None, key_id=key_id, detail=f"{kind}-{action}"
        ),
    )
