"""Use cases: record consent updates; on revocation stop further disclosures and withdraw unopened ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from hub.domain.error import Forbidden, InvalidInput
from hub.services.port import Caller, Clock, EventPublisher, KeyVault
from schemas.envelope import ConsentChanged, ConsentSummary, DeliveryWithdrawn
from schemas.profile import ConsentUpdate, ProfileError, validate_message
from schemas.topic import CONSENTS_CHANGED, DELIVERIES_WITHDRAWN


class ConsentState(Protocol):
    def record(self, event: ConsentChanged) -> bool: ...

    def statuses(self, consent_ids: Sequence[str]) -> dict[str, str]: ...


class TaskOfDelivery(Protocol):
    def task_of(self, delivery_id: str) -> str | None: ...


class CurrentConsents:
    """The consents a referral carried, with the statuses recorded since (revocations win)."""

    def __init__(self, state: ConsentState) -> None:
        self._state = state

    def current(self, consents: Sequence[ConsentSummary], at: datetime) -> list[ConsentSummary]:
        return self.current_many([consents], at)[0]

    def current_many(
        self, groups: Sequence[Sequence[ConsentSummary]], at: datetime
    ) -> list[list[ConsentSummary]]:
        """``current`` for several referrals with one lookup (a batch of the routing step)."""
        ids = sorted({c.consent_id for group in groups for c in group})
        statuses = self._state.statuses(ids) if ids else {}
        return [
            [
                c.model_copy(update={"status": statuses[c.consent_id]}) if c.consent_id in statuses else c
                for c in group
            ]
            for group in groups
        ]


class SubmitConsentUpdate:
    """A consent-update message (FHIR) from the agency that holds the consent form."""

    def __init__(self, publisher: EventPublisher, clock: Clock, topic_name: Callable[[str], str]) -> None:
        self._publisher = publisher
        self._clock = clock
        self._topic = topic_name(CONSENTS_CHANGED.name)

    async def __call__(self, caller: Caller, bundle: dict[str, Any], raw: bytes) -> list[ConsentChanged]:
        try:
            message = validate_message(bundle, size=len(raw), now=self._clock.now())
        except ProfileError as exc:
            raise InvalidInput(
                f"the consent-update Bundle breaks the Qixin profile: {len(exc.issues)} issue(s)",
                details=[i.as_dict() for i in exc.issues],
                code="profile-invalid",
            ) from None
        if not isinstance(message, ConsentUpdate):
            raise InvalidInput(
                f"expected a consent-update message, got '{message.event}'",
                details=[
                    {"path": "$.entry[0].resource.eventCoding", "rule": "code", "message": "consent-update"}
                ],
                code="wrong-message-event",
            )
        if message.sender_org != caller.org_id:
            raise Forbidden(
                f"credentials of '{caller.org_id}' cannot send for '{message.sender_org}'",
                code="sender-mismatch",
            )
        now = self._clock.now()
        events = [
            ConsentChanged(
                event_id=f"{message.idempotency_key}:{c.consent_id}",
                consent_id=c.consent_id,
                student_pseudonym=message.student_pseudonym,
                status=c.status,
                sender_org=message.sender_org,
                at=now,
                summary=c,
            )
            for c in message.consents
        ]
        for event in events:
            await self._publisher.publish(self._topic, event.student_pseudonym, event)
        return events


class ApplyConsentChange:
    """Worker side: record the new state; on revocation destroy the keys of unopened deliveries."""

    def __init__(self, state: ConsentState, vault: KeyVault, tasks: TaskOfDelivery, clock: Clock) -> None:
        self._state = state
        self._vault = vault
        self._tasks = tasks
        self._clock = clock

    def __call__(self, event: ConsentChanged) -> list[DeliveryWithdrawn]:
        self._state.record(event)
        if event.status == "active":
            return []
        withdrawn: list[DeliveryWithdrawn] = []
        now = self._clock.now()
        for seal in self._vault.unopened_under_consent(event.consent_id):
            # Destroying the wrapped key makes every copy of the ciphertext (Kafka, database) unreadable.
            self._vault.destroy(seal.delivery_id, now, f"consent {event.consent_id} revoked")
            withdrawn.append(
                DeliveryWithdrawn(
                    event_id=f"{seal.delivery_id}:withdrawn",
                    delivery_id=seal.delivery_id,
                    referral_id=seal.referral_id,
                    task_id=self._tasks.task_of(seal.delivery_id) or "",
                    recipient_org=seal.recipient_org,
                    consent_id=event.consent_id,
                    at=now,
                )
            )
        return withdrawn


def withdrawal_topic(topic_name: Callable[[str], str]) -> str:
    return topic_name(DELIVERIES_WITHDRAWN.name)
