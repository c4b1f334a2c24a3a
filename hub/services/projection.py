"""Use case: project pipeline events into the read model, idempotently."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from hub.services.port import ReadModel, Refusal
from hub.services.routing import Routed
from schemas.envelope import DeliveryOpened, ReferralSubmitted, TaskStatusChanged


class Project:
    def __init__(self, read_model: ReadModel) -> None:
        self._rm = read_model

    def status(self, event: TaskStatusChanged) -> bool:
        return self._rm.record_status(event)

    def opened(self, event: DeliveryOpened) -> bool:
        return self._rm.record_opened(event)

    def routed(self, batch: Sequence[Routed]) -> int:
        """Referrals, refusals and deliveries of routed referrals, in one transaction.

        The deliveries are projected here, with the routing decision, so a recipient's inbox shows a
        delivery as soon as the step has made it; returns how many deliveries were new.
        """
        return self._rm.record_routed(
            [(r.event, r.at, r.plan.ruleset_version) for r in batch],
            [
                _refusal(r.event.referral_id, x.route.recipient_org, x.outcome.reason_code, r.at)
                for r in batch
                for x in r.refused
            ],
            [d for r in batch for d in r.deliveries],
        )

    def reroute_context(self, referral_id: str) -> tuple[ReferralSubmitted | None, tuple[str, ...]]:
        """The intake event and every organisation that already declined this referral."""
        return self._rm.intake_of(referral_id), tuple(self._rm.declined_orgs(referral_id))


def _refusal(referral_id: str, recipient_org: str, reason_code: str, at: datetime) -> Refusal:
    return Refusal(f"{referral_id}:{recipient_org}:refused", referral_id, recipient_org, reason_code, at)
