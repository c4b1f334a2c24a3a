"""Use case: accept a referral Bundle at the edge and put it on the intake topic."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from hub.domain.error import Forbidden, InvalidInput
from hub.services.port import Caller, Clock, EventPublisher
from schemas.envelope import ReferralSubmitted
from schemas.profile import ProfileError, validate_referral
from schemas.topic import REFERRALS_SUBMITTED


@dataclass(frozen=True)
class Accepted:
    referral_id: str
    message_id: str
    status: str = "accepted"


class IntakeSealer:
    """Default no-op seal hook; the crypto adapter replaces it (see bootstrap)."""

    def seal_for_hub(self, referral_id: str, payload: bytes) -> tuple[str, str]:
        return "", ""


class SubmitReferral:
    def __init__(
        self, publisher: EventPublisher, clock: Clock, topic_name: Any, sealer: IntakeSealer | None = None
    ) -> None:
        self._publisher = publisher
        self._clock = clock
        self._topic = topic_name(REFERRALS_SUBMITTED.name)
        self._sealer = sealer or IntakeSealer()

    async def __call__(self, caller: Caller, bundle: dict[str, Any], raw: bytes) -> Accepted:
        try:
            referral = validate_referral(bundle, size=len(raw), now=self._clock.now())
        except ProfileError as exc:
            raise InvalidInput(
                f"the referral Bundle breaks the Qixin profile: {len(exc.issues)} issue(s)",
                details=[i.as_dict() for i in exc.issues],
                code="profile-invalid",
            ) from None
        if referral.sender_org != caller.org_id:
            raise Forbidden(
                f"credentials of '{caller.org_id}' cannot submit for sender '{referral.sender_org}'",
                code="sender-mismatch",
            )
        sealed, key_id = self._sealer.seal_for_hub(referral.referral_id, raw)
        event = ReferralSubmitted(
            event_id=str(uuid.uuid4()),
            referral_id=referral.referral_id,
            idempotency_key=referral.idempotency_key,
            submitted_at=self._clock.now(),
            student_pseudonym=referral.student_pseudonym,
            facts=referral.facts,
            sealed_bundle=sealed,
            bundle_key_id=key_id,
        )
        await self._publisher.publish(self._topic, referral.referral_id, event)
        return Accepted(referral_id=referral.referral_id, message_id=referral.message_id)
