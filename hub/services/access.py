"""Use case: a recipient opens a delivery: decrypt its sealed view, audit the access, notify the referrer.

Decryption happens in the hub with the recipient organisation's key from the key store (demo custody);
only the recipient's own staff (or its system client) can open, and every opening is recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hub.domain.error import Forbidden, HubError, NotFound
from hub.services.port import Caller, Clock, DeliveryRow, EventPublisher, KeyVault, ReadModel, StoredSeal
from schemas.envelope import DeliveryOpened
from schemas.topic import DELIVERIES_OPENED

log = logging.getLogger(__name__)

OPEN_ROLES = frozenset({"system", "clinician", "case-worker", "supervisor"})


class AccessAudit(Protocol):
    async def __call__(self, opened: DeliveryOpened) -> None:
        """Write the ``access`` audit event for this opening (hub.services.audit.RecordAudit)."""


@dataclass(frozen=True)
class OpenedDelivery:
    delivery: DeliveryRow
    content: dict[str, Any] | None  # the decrypted minimised FHIR Bundle, or None
    unavailable: str | None  # why there is no content: "not-sealed-yet" | "withdrawn" | "no-key" | …
    first_opening: bool = False


class OpenDelivery:
    def __init__(
        self,
        read_model: ReadModel,
        vault: KeyVault | None,
        open_seal: Callable[[StoredSeal], bytes] | None,
        publisher: EventPublisher,
        clock: Clock,
        topic_name: Any,
        audit: AccessAudit | None = None,
    ) -> None:
        self._rm = read_model
        self._vault = vault
        self._open_seal = open_seal
        self._publisher = publisher
        self._clock = clock
        self._topic = topic_name(DELIVERIES_OPENED.name)
        self._audit = audit

    async def __call__(self, caller: Caller, task_id: str) -> OpenedDelivery:
        row = await asyncio.to_thread(self._rm.delivery_by_task, task_id)
        # Only the recipient opens: another agency (the sender included) gets "not found", so task
        # ids cannot be probed and the sender never reads what was sealed for someone else.
        if row is None or row.recipient_org != caller.org_id:
            raise NotFound(
                f"no delivery for task '{task_id}' addressed to '{caller.org_id}'", code="task-not-found"
            )
        if caller.role not in OPEN_ROLES:
            raise Forbidden(f"role '{caller.role}' cannot open referral content", code="role-forbidden")
        content, unavailable = await asyncio.to_thread(self._decrypt, row)
        if content is None:
            return OpenedDelivery(row, None, unavailable)
        now = self._clock.now()
        first = bool(self._vault and await asyncio.to_thread(self._vault.mark_opened, row.delivery_id, now))
        opened = DeliveryOpened(
            event_id=str(uuid.uuid4()),
            delivery_id=row.delivery_id,
            referral_id=row.referral_id,
            task_id=row.task_id,
            recipient_org=row.recipient_org,
            sender_org=row.sender_org,
            opened_by_role=caller.role,
            opened_by_user=getattr(caller, "user_id", None) or None,
            first=first,
            at=now,
        )
        # The access notice goes to the referrer through the pipeline (deliveries.opened).
        await self._publisher.publish(self._topic, row.referral_id, opened)
        # AUDIT CALL SITE (access): the one place an opening is written to the audit chain.
        if self._audit is not None:
            await self._audit(opened)
        return OpenedDelivery(row, content, None, first)

    def _decrypt(self, row: DeliveryRow) -> tuple[dict[str, Any] | None, str | None]:
        if self._vault is None or self._open_seal is None:
            return None, "no-key-store"
        seal = self._vault.get(row.delivery_id)
        if seal is None:
            return None, "not-sealed-yet"
        if not seal.wrapped_key:
            return None, "withdrawn"
        try:
            if seal.recipient_org != row.recipient_org or seal.referral_id != row.referral_id:
                return None, "seal-mismatch"
            # Verifies the hub's signature, then opens with the recipient's key (demo custody).
            plaintext = self._open_seal(seal)
            content = json.loads(plaintext)
        except HubError as exc:
            log.warning("delivery %s does not open: %s", row.delivery_id, exc.code)
            return None, exc.code
        except (ValueError, TypeError):
            return None, "content-unreadable"
        return (content if isinstance(content, dict) else {"content": content}), None
