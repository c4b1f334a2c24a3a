"""Use case: accept a referral Bundle at the edge and put it on the intake topic."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from hub.domain.error import Forbidden, InvalidInput, Unavailable
from hub.services.port import Caller, Clock, EventPublisher
from schemas.envelope import InboundSubmission, ReferralSubmitted
from schemas.profile import ProfileError, validate_referral
from schemas.topic import REFERRALS_SUBMITTED


@dataclass(frozen=True)
class Accepted:
    referral_id: str
    message_id: str
    status: str = "accepted"


class IntakeSealer(Protocol):
    def seal_for_hub(self, referral_id: str, payload: bytes) -> tuple[str, str]:
        """Seal the accepted Bundle so only the hub can read it on the topic: (token, key id)."""


class SignatureCheck(Protocol):
    def verify(self, body: bytes, signature: str | None, sender_org: str) -> str:
        """Return the key id that signed ``body``; raise a signature error otherwise."""


class SubmitReferral:
    def __init__(
        self,
        publisher: EventPublisher,
        clock: Clock,
        topic_name: Any,
        sealer: IntakeSealer,
        signatures: SignatureCheck | None,
    ) -> None:
        self._publisher = publisher
        self._clock = clock
        self._topic = topic_name(REFERRALS_SUBMITTED.name)
        self._sealer = sealer
        self._signatures = signatures  # None only where the operator turned signatures off

    async def __call__(
        self, caller: Caller, bundle: dict[str, Any], raw: bytes, signature: str | None = None
    ) -> Accepted:
        """An HTTP submission: the API key's agency must be the Bundle's sender."""
        return await self.accept(bundle, raw, signature, caller_org=caller.org_id)

    async def accept(
        self, bundle: dict[str, Any], raw: bytes, signature: str | None, caller_org: str | None = None
    ) -> Accepted:
        """Validate, check the sender and its signature, seal for the hub, publish (both transports)."""
        try:
            referral = validate_referral(bundle, size=len(raw), now=self._clock.now())
        except ProfileError as exc:
            raise InvalidInput(
                f"the referral Bundle breaks the Qixin profile: {len(exc.issues)} issue(s)",
                details=[i.as_dict() for i in exc.issues],
                code="profile-invalid",
            ) from None
        if caller_org is not None and referral.sender_org != caller_org:
            raise Forbidden(
                f"credentials of '{caller_org}' cannot submit for sender '{referral.sender_org}'",
                code="sender-mismatch",
            )
        if self._signatures is not None:
            self._signatures.verify(raw, signature, referral.sender_org)
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
        try:
            await self._publisher.publish(self._topic, referral.referral_id, event)
        except Unavailable as exc:
            # Only the broker's acknowledgement makes a referral accepted. Re-sending is safe: the
            # referral id derives from (sender, MessageHeader id), so copies collapse into one.
            raise Unavailable(
                f"the referral was NOT accepted: {exc.message}. Send the same message again later "
                "(same MessageHeader id); the hub takes a referral once however often it arrives",
                code=exc.code,
                retry_after=exc.retry_after,
            ) from None
        return Accepted(referral_id=referral.referral_id, message_id=referral.message_id)


class InboundOpener(Protocol):
    def open_inbound(self, submission_id: str, token: str) -> bytes: ...


class AcceptInbound:
    """A connector's submission straight to Kafka: opened, then treated like an HTTP submission."""

    def __init__(self, opener: InboundOpener, submit: SubmitReferral) -> None:
        self._opener = opener
        self._submit = submit

    async def __call__(self, record: InboundSubmission) -> Accepted:
        raw = self._opener.open_inbound(record.submission_id, record.sealed_bundle)
        try:
            bundle = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidInput("the sealed Bundle is not JSON", code="body-not-json") from None
        if not isinstance(bundle, dict):
            raise InvalidInput("the sealed payload is not a FHIR resource", code="body-not-json")
        # The signature proves the sender; the record's sender_org must agree with the Bundle.
        return await self._submit.accept(bundle, raw, record.signature, caller_org=record.sender_org)
