"""Use case: project pipeline events into the read model, idempotently."""

from __future__ import annotations

from datetime import datetime

from hub.services.port import ReadModel
from schemas.envelope import DeliveryCreated, DeliveryOpened, ReferralSubmitted, TaskStatusChanged


class Project:
    def __init__(self, read_model: ReadModel) -> None:
        self._rm = read_model

    def referral(self, event: ReferralSubmitted, routed_at: datetime, ruleset_version: str) -> bool:
        return self._rm.record_referral(event, routed_at, ruleset_version)

    def delivery(self, event: DeliveryCreated) -> bool:
        return self._rm.record_delivery(event)

    def status(self, event: TaskStatusChanged) -> bool:
        return self._rm.record_status(event)

    def opened(self, event: DeliveryOpened) -> bool:
        return self._rm.record_opened(event)

    def refusal(self, referral_id: str, recipient_org: str, reason_code: str, at: datetime) -> bool:
        event_id = f"{referral_id}:{recipient_org}:refused"
        return self._rm.record_refusal(event_id, referral_id, recipient_org, reason_code, at)

    def reroute_context(self, referral_id: str) -> tuple[ReferralSubmitted | None, tuple[str, ...]]:
        """The intake event and every organisation that already declined this referral."""
        return self._rm.intake_of(referral_id), tuple(self._rm.declined_orgs(referral_id))
