"""Use cases of the audit trail: record an event, append it to the hash chain, search and verify."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from hub.domain.audit import (
    GENESIS,
    ChainBroken,
    ChainConflict,
    ChainHead,
    ChainReport,
    ChainRow,
    Checkpoint,
    SignatureCheck,
    chain,
    check_segment,
    next_checkpoint,
    verify_chain,
)
from hub.domain.error import InvalidInput
from hub.services.crypto_port import HUB_OWNER, CryptoError, SignaturePurpose, Signer, Verifier
from hub.services.port import Clock, EventPublisher
from schemas.audit import AuditEvent, AuditType
from schemas.topic import AUDIT_EVENTS

log = logging.getLogger(__name__)

MAX_PAGE = 500


# --------------------------------------------------------------------------------------------------
# Ports


@dataclass(frozen=True)
class AuditSearch:
    """Filters of an auditor's search; ``after_seq`` is the keyset cursor (results in chain order)."""

    referral_id: str | None = None
    agency: str | None = None  # matches the acting organisation or the other organisation involved
    since: datetime | None = None
    until: datetime | None = None
    type: AuditType | None = None
    after_seq: int = 0
    limit: int = 100


@dataclass(frozen=True)
class AuditPage:
    items: list[dict[str, Any]]  # {"seq", "hash", "event": <AuditEvent JSON>}
    next_after: int | None  # pass as after_seq for the next page; None at the end


class AuditStore(Protocol):
    """The chain's storage; appends are all-or-nothing and refuse a taken seq or event id."""

    def head(self) -> ChainHead | None:
        """The last row's seq and hash; None while the chain is empty."""

    def count(self, upto_seq: int | None = None) -> int:
        """Rows in the chain (with seq <= upto_seq when given)."""

    def existing(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids are already in the chain."""

    def insert(self, rows: Sequence[ChainRow]) -> None:
        """Insert in one transaction; raise ChainConflict if a seq or event id is taken."""

    def rows(self, after_seq: int = 0, batch: int = 1000) -> Iterator[ChainRow]:
        """Rows with seq > after_seq in stored seq order, with their index columns."""

    def latest_checkpoint(self) -> Checkpoint | None: ...

    def checkpoints(self) -> list[Checkpoint]: ...

    def insert_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Raise ChainConflict if the checkpoint number is taken."""

    def search(self, query: AuditSearch) -> list[tuple[int, str, bytes]]:
        """(seq, hash, payload) of matching rows with seq > after_seq, in seq order, at most limit."""


# --------------------------------------------------------------------------------------------------
# Recording


class RecordAudit:
    """Publish an audit event on ``audit.events``; the worker's ``chain_audit`` agent chains it.

    ``topic_name`` is either the full topic name or the settings' prefixing function
    (``settings.topic``), which is applied to ``audit.events``.
    """

    def __init__(self, publisher: EventPublisher, topic_name: str | Callable[[str], str]) -> None:
        self._publisher = publisher
        self._topic = topic_name if isinstance(topic_name, str) else topic_name(AUDIT_EVENTS.name)

    @property
    def topic(self) -> str:
        return self._topic

    async def record(self, event: AuditEvent) -> None:
        # One partition keeps one order; the key only groups a referral's events for consumers.
        await self._publisher.publish(self._topic, event.entity.referral_id or event.event_id, event)

    async def record_many(self, events: Sequence[AuditEvent]) -> None:
        """Publish several and wait for all of them at once (not one broker round trip each)."""
        await asyncio.gather(*(self.record(event) for event in events))


# --------------------------------------------------------------------------------------------------
# Chaining


@dataclass(frozen=True)
class Appended:
    rows: list[ChainRow] = field(default_factory=list)
    duplicates: int = 0
    checkpoint: Checkpoint | None = None


class AppendToChain:
    """Append events once each (by event id), in arrival order; sign a checkpoint every ``every`` rows.

    The audit topic has one partition, so one worker appends at a time; a second writer (a rebalance
    overlap) loses on the seq primary key, re-reads the head and tries again.
    """

    def __init__(self, store: AuditStore, signer: Signer, clock: Clock, every: int = 100) -> None:
        if every < 1:
            raise InvalidInput("a checkpoint is made every N >= 1 events")
        self._store = store
        self._signer = signer
        self._clock = clock
        self._every = every
        self._head: ChainHead | None = None
        # The agent appends and the timer checkpoints from worker threads of the same process.
        self._lock = threading.RLock()

    def __call__(self, events: Sequence[AuditEvent], attempts: int = 5) -> Appended:
        with self._lock:
            return self._append(events, attempts)

    def _append(self, events: Sequence[AuditEvent], attempts: int) -> Appended:
        unique: dict[str, AuditEvent] = {}
        for event in events:
            unique.setdefault(event.event_id, event)
        for attempt in range(attempts):
            known = self._store.existing(list(unique))
            fresh = [e for e in unique.values() if e.event_id not in known]
            if not fresh:
                return Appended(duplicates=len(events))
            head = self._head if self._head is not None else (self._store.head() or GENESIS)
            rows = chain(head, fresh)
            try:
                self._store.insert(rows)
            except ChainConflict:
                self._head = None  # someone else appended: read the head again
                if attempt == attempts - 1:
                    raise
                continue
            self._head = ChainHead(rows[-1].seq, rows[-1].hash)
            checkpoint = None
            if rows[-1].seq // self._every > (rows[0].seq - 1) // self._every:  # passed a multiple
                # Logged when refused; the rows stay appended and `hub audit verify` says where.
                with contextlib.suppress(ChainBroken):
                    checkpoint = self._checkpoint(force=False)

            return Appended(rows=rows, duplicates=len(events) - len(rows), checkpoint=checkpoint)
        raise ChainConflict("could not append to the audit chain")  # pragma: no cover

    def checkpoint(self, force: bool = False) -> Checkpoint | None:
        """Sign the current head unless the newest checkpoint already covers it (``force`` re-signs)."""
        with self._lock:
            return self._checkpoint(force)

    def _checkpoint(self, force: bool) -> Checkpoint | None:
        head = self._store.head()
        if head is None:
            return None
        previous = self._store.latest_checkpoint()
        if previous is not None and previous.seq >= head.seq and not force:
            return None
        # Never seal what does not verify: re-check every link since the previous checkpoint, up to
        # the head read above (rows appended meanwhile belong to the next checkpoint).
        start = ChainHead(previous.seq, previous.head_hash) if previous else GENESIS
        segment = check_segment(
            start, (r for r in self._store.rows(after_seq=start.seq) if r.seq <= head.seq)
        )
        if segment.problem is not None or segment.end != head:
            problem = segment.problem or f"the rows do not lead to the head at seq {head.seq}"
            log.error("audit chain broken, checkpoint refused", extra={"seq": segment.end.seq})
            raise ChainBroken(f"not signing a checkpoint: {problem}")
        count = (previous.count if previous else 0) + segment.rows
        unsigned = next_checkpoint(head, count, previous, self._clock.now())
        signature = self._signer.sign(unsigned.payload(), purpose=SignaturePurpose.AUDIT_CHECKPOINT)
        signed = Checkpoint(
            number=unsigned.number,
            seq=unsigned.seq,
            head_hash=unsigned.head_hash,
            count=unsigned.count,
            at=unsigned.at,
            signature=signature,
        )
        try:
            self._store.insert_checkpoint(signed)
        except ChainConflict:
            log.info("audit checkpoint %s written by another worker", signed.number)
            return None
        return signed


# --------------------------------------------------------------------------------------------------
# Queries


def hub_signature_check(verifier: Verifier, signer: str = HUB_OWNER) -> SignatureCheck:
    """Adapt a crypto Verifier to the domain's checkpoint signature check."""

    def check(payload: bytes, signature: str) -> str | None:
        try:
            verifier.verify(payload, signature, signer=signer, purpose=SignaturePurpose.AUDIT_CHECKPOINT)
        except CryptoError as exc:
            return f"{exc.code}: {exc.message}"
        return None

    return check


class AuditQueries:
    """What auditors ask: which events concern a referral or agency in a period; is the chain intact?"""

    def __init__(self, store: AuditStore, signature_check: SignatureCheck) -> None:
        self._store = store
        self._check = signature_check

    def search(self, query: AuditSearch) -> AuditPage:
        if not 1 <= query.limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", code="invalid-limit")
        if query.since and query.until and query.since > query.until:
            raise InvalidInput("'since' is after 'until'", code="invalid-period")
        for bound in (query.since, query.until):
            if bound is not None and bound.tzinfo is None:
                raise InvalidInput(
                    "times need a UTC offset, e.g. 2025-03-01T08:00:00+08:00", code="naive-time"
                )
        found = self._store.search(query)
        items = [{"seq": seq, "hash": digest, "event": _document(payload)} for seq, digest, payload in found]
        more = len(found) == query.limit
        return AuditPage(items=items, next_after=found[-1][0] if more and found else None)

    def verify(self) -> ChainReport:
        # Checkpoints first: a row appended while we read is then simply "after the last checkpoint".
        checkpoints = self._store.checkpoints()
        return verify_chain(self._store.rows(), checkpoints, self._check)


def _document(payload: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(payload)
    return parsed
