"""Use case: project pipeline events into the read model, idempotently."""

from __future__ import annotations

from datetime import datetime

from hub.services.port import ReadModel
from schemas.envelope import DeliveryCreated, ReferralSubmitted, TaskStatusChanged


class Project:
    def __init__(self, read_model: ReadModel) -> None:
        self._rm = read_model

    def referral(self, event: ReferralSubmitted, routed_at: datetime, ruleset_version: str) -> bool:
        return self._rm.record_referral(event, routed_at, ruleset_version)

    def delivery(self, event: DeliveryCreated) -> bool:
        return self._rm.record_delivery(event)

    def status(self, event: TaskStatusChanged) -> bool:
        return self._rm.record_status(event)
