"""Rows of the read model for tests that write it directly (SQL adapters on PostgreSQL and SQLite)."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def delivery_row(delivery_id: str, at: datetime, **overrides: Any) -> dict[str, Any]:
    """A ``deliveries`` row from a school to a clinic, created at ``at``; any column can be overridden."""
    return {
        "delivery_id": delivery_id,
        "task_id": "t-" + delivery_id,
        "referral_id": "r-" + delivery_id,
        "recipient_org": "sj-camhs-1",
        "recipient_type": "camhs",
        "sender_org": "school-1",
        "purpose": "treatment",
        "legal_basis": "consent",
        "categories": ["risk"],
        "priority": "urgent",
        "risk_level": 3,
        "reasons": ["self-harm"],
        "rule_id": "r1",
        "ruleset_version": "v1",
        "status": "requested",
        "created_at": at,
        "updated_at": at,
        "escalation_level": 0,
        "version": 0,
        **overrides,
    }
