"""Audit chain maths: canonical bytes, hash links, signed checkpoints, and a verifier that locates tampering.

``hash_i = sha256(prev_hash_i || canonical_i || seq_i)`` with ``prev_hash`` the 32 raw bytes of the
previous row's hash (the genesis hash for seq 1) and ``seq`` 8 bytes big-endian, so a record cannot be
changed, dropped, moved or slipped in without breaking a link. The hash is public maths: someone who
can write the table can re-hash everything after an edit, which is why checkpoints (seq, head hash,
count, time) are signed with the hub's Ed25519 key; rows after the last checkpoint are "unsealed".
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from hub.domain.error import Conflict, HubError
from schemas.audit import AuditEvent

CHAIN_FORMAT = "qixin-audit-chain/v1"
GENESIS_HASH = hashlib.sha256(f"{CHAIN_FORMAT}/genesis".encode()).hexdigest()
# How far a renumbered row is looked for (rows deleted or inserted before it and seqs shifted).
_SHIFT_SEARCH = 64
# Above this many broken rows, moved rows are only looked for within _SHIFT_SEARCH of where they are.
_CROSS_SEARCH_LIMIT = 2000

# The searchable columns stored beside each record; the verifier checks they still say what the
# chained record says (an edited column would mislead every auditor's search).
INDEX_FIELDS: tuple[str, ...] = (
    "event_id",
    "type",
    "action",
    "recorded",
    "outcome",
    "agent_org",
    "agent_role",
    "agent_user",
    "source",
    "referral_id",
    "delivery_id",
    "task_id",
    "entity_org",
    "purpose",
    "legal_basis",
)


class ChainConflict(Conflict):
    """Another writer appended at the same seq (or the same event id) first; re-read the head."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="audit-chain-conflict")


# --------------------------------------------------------------------------------------------------
# Records and links


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: one byte string per document, whichever process wrote it."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def canonical_bytes(event: AuditEvent) -> bytes:
    # Unset optional fields are left out, so adding an optional field later keeps old bytes stable.
    return canonical_json(event.model_dump(mode="json", exclude_none=True))


def _raw_hash(text: str) -> bytes | None:
    try:
        raw = bytes.fromhex(text)
    except (ValueError, TypeError):
        return None
    return raw if len(raw) == 32 else None


def link_hash(prev_hash: str, payload: bytes, seq: int) -> str:
    """sha256(prev || canonical || seq); an unparseable prev hash gives a hash no row can have."""
    prev = _raw_hash(prev_hash)
    if prev is None or seq < 0:
        return "invalid:" + prev_hash[:80]
    return hashlib.sha256(prev + payload + seq.to_bytes(8, "big")).hexdigest()


def index_of(document: Mapping[str, Any]) -> dict[str, Any]:
    """The searchable column values of a record (from its JSON document)."""
    agent = document.get("agent") or {}
    entity = document.get("entity") or {}
    outcome = document.get("outcome") or {}
    recorded = document.get("recorded")
    return {
        "event_id": document.get("event_id"),
        "type": document.get("type"),
        "action": document.get("action"),
        "recorded": _as_datetime(recorded),
        "outcome": outcome.get("code"),
        "agent_org": agent.get("org_id"),
        "agent_role": agent.get("role"),
        "agent_user": agent.get("user_id"),
        "source": document.get("source"),
        "referral_id": entity.get("referral_id"),
        "delivery_id": entity.get("delivery_id"),
        "task_id": entity.get("task_id"),
        "entity_org": entity.get("org_id"),
        "purpose": document.get("purpose"),
        "legal_basis": document.get("legal_basis"),
    }


def _as_datetime(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int
    hash: str


GENESIS = ChainHead(0, GENESIS_HASH)


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One stored record: its place, its links and the exact bytes that were hashed."""

    seq: int
    event_id: str
    prev_hash: str
    hash: str
    payload: bytes
    # The searchable columns as stored; None when the caller does not want them checked.
    index: Mapping[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.payload)
        return parsed


def chain(head: ChainHead, events: Iterable[AuditEvent]) -> list[ChainRow]:
    """The rows that append ``events`` (in order) after ``head``."""
    rows: list[ChainRow] = []
    for event in events:
        payload = canonical_bytes(event)
        seq = head.seq + 1
        digest = link_hash(head.hash, payload, seq)
        rows.append(
            ChainRow(
                seq=seq,
                event_id=event.event_id,
                prev_hash=head.hash,
                hash=digest,
                payload=payload,
                index=index_of(json.loads(payload)),
            )
        )
        head = ChainHead(seq, digest)
    return rows


# --------------------------------------------------------------------------------------------------
# Checkpoints


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The hub's signed statement "the chain had ``count`` records, ending at ``seq`` with ``head_hash``"."""

    number: int
    seq: int
    head_hash: str
    count: int
    at: datetime
    signature: str = ""

    def payload(self) -> bytes:
        return canonical_json(
            {
                "format": CHAIN_FORMAT,
                "number": self.number,
                "seq": self.seq,
                "head": self.head_hash,
                "count": self.count,
                "at": self.at.astimezone(UTC).isoformat(timespec="microseconds"),
            }
        )

    @property
    def key_id(self) -> str:
        """The signing key named in an ``ed25519:<key id>:<signature>`` token ('' if none)."""
        parts = self.signature.split(":")
        return parts[1] if len(parts) == 3 else ""


def next_checkpoint(head: ChainHead, count: int, previous: Checkpoint | None, at: datetime) -> Checkpoint:
    """The unsigned checkpoint that seals the chain up to ``head``."""
    # Signed as UTC with microseconds, which PostgreSQL and SQLite both give back unchanged.
    return Checkpoint(
        number=(previous.number if previous else 0) + 1,
        seq=head.seq,
        head_hash=head.hash,
        count=count,
        at=at.astimezone(UTC),
    )


@dataclass(frozen=True, slots=True)
class Segment:
    """The rows after a checkpoint, as checked before the next one is signed."""

    end: ChainHead
    rows: int
    problem: str | None = None


def check_segment(start: ChainHead, rows: Iterable[ChainRow]) -> Segment:
    """Do ``rows`` continue the chain from ``start`` link by link? The hub signs nothing else."""
    head, n = start, 0
    for row in rows:
        if row.seq != head.seq + 1:
            return Segment(head, n, f"seq {head.seq + 1} expected after seq {head.seq}, found seq {row.seq}")
        if row.prev_hash != head.hash:
            return Segment(head, n, f"seq {row.seq} does not link to seq {head.seq}")
        if link_hash(row.prev_hash, row.payload, row.seq) != row.hash:
            return Segment(head, n, f"seq {row.seq} does not match its hash")
        head, n = ChainHead(row.seq, row.hash), n + 1
    return Segment(head, n)


class ChainBroken(HubError):
    """The chain since the last checkpoint does not verify: it will not be signed (run `hub audit verify`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message=message, code="audit-chain-broken", status=409)


class SignatureCheck(Protocol):
    """Checks the hub's checkpoint signature; the crypto adapter implements it (the domain stays pure)."""

    def __call__(self, payload: bytes, signature: str) -> str | None:
        """None when ``signature`` is the hub's over ``payload``; otherwise why not (no key material)."""


# --------------------------------------------------------------------------------------------------
# Verification


class ProblemKind(StrEnum):
    EDITED = "edited"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True, slots=True)
class ChainProblem:
    kind: ProblemKind
    seq: int | None
    detail: str
    checkpoint: int | None = None

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else f"checkpoint {self.checkpoint}"
        return f"{where}: {self.kind.value}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "seq": self.seq,
            "checkpoint": self.checkpoint,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class ChainReport:
    events: int
    checkpoints: int
    head_seq: int
    head_hash: str
    problems: list[ChainProblem] = field(default_factory=list)
    sealed_seq: int = 0  # the last seq a valid signed checkpoint covers
    unsealed: int = 0  # records after it (only their links protect them)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            sealed = f"; {self.unsealed} after the last checkpoint" if self.unsealed else ""
            return (
                f"chain intact: {self.events} events, {self.checkpoints} checkpoints, "
                f"head {self.head_seq}:{self.head_hash}{sealed}"
            )
        return f"chain broken: {len(self.problems)} problem(s) in {self.events} events"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "checkpoints": self.checkpoints,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "sealed_seq": self.sealed_seq,
            "unsealed": self.unsealed,
            "problems": [p.as_dict() for p in self.problems],
        }


@dataclass(slots=True)
class _Slot:
    pos: int
    seq: int
    prev: str
    hash: str
    self_ok: bool
    payload: bytes | None  # kept only for rows that fail their own hash
    origin: int = 0  # the seq its (prev, hash) were written for
    recovered: bool = True  # False: no seq explains its hash (content edited)
    content_of: int | None = None  # its payload is the record written for another seq
    content_problem: str | None = None


def _content_problem(row: ChainRow) -> str | None:
    try:
        document = row.document()
    except (ValueError, UnicodeDecodeError):
        return "the record is not JSON"
    if not isinstance(document, dict):
        return "the record is not a JSON object"
    if canonical_json(document) != row.payload:
        return "the record is not in canonical form (re-serialised or hand-edited)"
    if document.get("event_id") != row.event_id:
        return f"column event_id says {row.event_id!r}, the record says {document.get('event_id')!r}"
    if row.index is not None:
        chained = index_of(document)
        for name in INDEX_FIELDS:
            stored = _as_datetime(row.index.get(name))
            if stored != chained[name]:
                return f"column {name} differs from the chained record"
    return None


def _runs(values: Sequence[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _span(lo: int, hi: int) -> str:
    return f"seq {lo}" if lo == hi else f"seq {lo}..{hi}"


def _in_order(origins: Sequence[int], weights: Sequence[int]) -> set[int]:
    """Indexes of the heaviest strictly increasing subsequence of ``origins`` (O(n log n)).

    Rows still at the seq they were written for weigh more, so when two rows trade places the rows
    around them are not the ones blamed.
    """
    ranks = {v: r + 1 for r, v in enumerate(sorted(set(origins)))}
    size = len(ranks)
    tree: list[tuple[int, int]] = [(0, -1)] * (size + 1)  # Fenwick tree of prefix max (score, index)
    parent = [-1] * len(origins)
    best: tuple[int, int] = (0, -1)
    for i, (origin, weight) in enumerate(zip(origins, weights, strict=True)):
        r = ranks[origin] - 1
        prefix: tuple[int, int] = (0, -1)
        while r > 0:
            prefix = max(prefix, tree[r])
            r -= r & -r
        score = prefix[0] + weight
        parent[i] = prefix[1]
        r = ranks[origin]
        while r <= size:
            tree[r] = max(tree[r], (score, i))
            r += r & -r
        best = max(best, (score, i))
    keep: set[int] = set()
    i = best[1]
    while i != -1:
        keep.add(i)
        i = parent[i]
    return keep


class _Problems:
    """At most one problem per (seq, kind); details of the same place are merged."""

    def __init__(self) -> None:
        self._items: dict[tuple[int | None, int | None, ProblemKind], ChainProblem] = {}

    def add(self, kind: ProblemKind, seq: int | None, detail: str, checkpoint: int | None = None) -> None:
        key = (seq, checkpoint if seq is None else None, kind)
        if key in self._items:
            return
        self._items[key] = ChainProblem(kind, seq, detail, checkpoint)

    def at(self, seq: int) -> bool:
        return any(k[0] == seq for k in self._items)

    def within(self, lo: int, hi: int) -> bool:
        return any(k[0] is not None and lo <= k[0] <= hi for k in self._items)

    def sorted(self) -> list[ChainProblem]:
        return sorted(
            self._items.values(),
            key=lambda p: (p.seq if p.seq is not None else 1 << 62, p.checkpoint or 0, p.kind.value),
        )


def verify_chain(
    rows: Iterable[ChainRow], checkpoints: Sequence[Checkpoint], check: SignatureCheck
) -> ChainReport:
    """Say what is wrong with a stored chain and where; ``rows`` in stored seq order.

    Each row's original seq is recovered from its own hash, so a moved or renumbered row is told apart
    from an edited one; the chain is then rebuilt in original order to find what is missing, doubled
    or out of place. Seqs in problems are the seqs as stored now (what an operator can look up).
    """
    problems = _Problems()
    slots: list[_Slot] = []
    for pos, row in enumerate(rows):
        ok = link_hash(row.prev_hash, row.payload, row.seq) == row.hash
        slots.append(
            _Slot(
                pos=pos,
                seq=row.seq,
                prev=row.prev_hash,
                hash=row.hash,
                self_ok=ok,
                payload=None if ok else row.payload,
                origin=row.seq,
                content_problem=_content_problem(row),
            )
        )
    _recover_origins(slots)
    genuine = _pick_genuine(slots, {cp.head_hash for cp in checkpoints}, problems)
    last = max(genuine, default=0)

    by_stored = {s.seq: s for s in slots}
    missing = [o for o in range(1, last + 1) if o not in genuine]
    for lo, hi in _runs(missing):
        renumbered = [s for s in genuine.values() if s.origin > hi and s.seq != s.origin]
        tail = "; later rows were renumbered" if renumbered else ""
        problems.add(ProblemKind.DELETED, lo, f"{_span(lo, hi)} missing from the chain{tail}")

    for origin in sorted(genuine):
        slot = genuine[origin]
        if origin == 1:
            if slot.prev != GENESIS_HASH:
                problems.add(
                    ProblemKind.EDITED, slot.seq, "the first record does not link to the genesis hash"
                )
            continue
        before = genuine.get(origin - 1)
        if before is None or slot.prev == before.hash:
            continue
        problems.add(
            ProblemKind.EDITED,
            before.seq,
            f"the record was rewritten and re-hashed (seq {slot.seq} still links to the original)",
        )

    _report_moves(genuine, by_stored, problems)

    for slot in slots:
        if problems.at(slot.seq) or genuine.get(slot.origin) is not slot:
            continue
        if slot.content_of is None and not slot.recovered:
            problems.add(ProblemKind.EDITED, slot.seq, "the record does not match its hash")
        elif slot.content_problem:
            problems.add(ProblemKind.EDITED, slot.seq, slot.content_problem)

    sealed = _check_checkpoints(checkpoints, genuine, last, check, problems)
    head = genuine[last] if last else None
    return ChainReport(
        events=len(slots),
        checkpoints=len(checkpoints),
        head_seq=head.seq if head else 0,
        head_hash=head.hash if head else GENESIS_HASH,
        problems=problems.sorted(),
        sealed_seq=sealed,
        unsealed=max(0, last - sealed),
    )


def _recover_origins(slots: list[_Slot]) -> None:
    failing = [s for s in slots if not s.self_ok]
    if not failing:
        return
    stored = {s.seq for s in slots}
    top = max(stored)
    cross: list[int] = []
    if len(failing) <= _CROSS_SEARCH_LIMIT:
        holes = [n for n in range(1, top + 1) if n not in stored][:_CROSS_SEARCH_LIMIT]
        cross = sorted({s.seq for s in failing} | set(holes))
    shift = 0  # renumbered rows come in runs with one offset: try the last one found first
    for slot in failing:
        assert slot.payload is not None
        candidates = [slot.seq + shift] if shift else []
        candidates += cross
        for d in range(1, _SHIFT_SEARCH + 1):
            candidates += [slot.seq + d, slot.seq - d]
        seen: set[int] = set()
        for c in candidates:
            if c < 1 or c == slot.seq or c in seen:
                continue
            seen.add(c)
            if link_hash(slot.prev, slot.payload, c) == slot.hash:
                slot.origin, shift = c, c - slot.seq
                break
        else:
            slot.recovered = False
    # A payload moved without its hash and links: whose record is it?
    if len(failing) <= _CROSS_SEARCH_LIMIT:
        for slot in failing:
            if slot.recovered:
                continue
            assert slot.payload is not None
            for other in failing:
                if other is not slot and link_hash(other.prev, slot.payload, other.seq) == other.hash:
                    slot.content_of = other.seq
                    break


def _pick_genuine(slots: list[_Slot], heads: set[str], problems: _Problems) -> dict[int, _Slot]:
    """One row per original seq; extra claimants are rows that were slipped in.

    The genuine one explains its own hash, is linked to by its successor or sealed by a checkpoint;
    failing those, it is the one that was pushed aside (an insert renumbers the rows after it).
    """
    claims: dict[int, list[_Slot]] = {}
    for slot in slots:
        claims.setdefault(slot.origin, []).append(slot)
    referenced = {s.prev for s in slots}
    genuine: dict[int, _Slot] = {}
    for origin, claimants in claims.items():
        if len(claimants) == 1:
            genuine[origin] = claimants[0]
            continue
        ranked = sorted(
            claimants,
            key=lambda s: (
                not (s.recovered or s.content_of is not None),
                s.hash not in referenced and s.hash not in heads,
                s.seq == s.origin,
                s.pos,
            ),
        )
        genuine[origin] = ranked[0]
        for extra in ranked[1:]:
            problems.add(
                ProblemKind.INSERTED,
                extra.seq,
                f"the record is not part of the chain (a second record claiming seq {origin}; "
                "nothing links to it)",
            )
    return genuine


def _report_moves(genuine: dict[int, _Slot], by_stored: dict[int, _Slot], problems: _Problems) -> None:
    ordered = sorted(genuine.values(), key=lambda s: s.pos)
    heavy = len(ordered) + 1
    in_order = _in_order([s.origin for s in ordered], [heavy if s.seq == s.origin else 1 for s in ordered])
    reported: set[int] = set()
    for i, slot in enumerate(ordered):
        if i in in_order or slot.seq in reported:
            continue
        partner = by_stored.get(slot.origin)
        if partner is not None and partner.origin == slot.seq and partner is not slot:
            lo, hi = sorted((slot.seq, partner.seq))
            problems.add(ProblemKind.REORDERED, lo, f"seq {lo} and seq {hi} exchanged places")
            reported |= {lo, hi}
        else:
            problems.add(
                ProblemKind.REORDERED, slot.seq, f"the record was written as seq {slot.origin}, moved here"
            )
            reported.add(slot.seq)
    for slot in ordered:
        if slot.content_of is None or slot.seq in reported:
            continue
        partner = by_stored.get(slot.content_of)
        if partner is not None and partner.content_of == slot.seq:
            lo, hi = sorted((slot.seq, slot.content_of))
            problems.add(ProblemKind.REORDERED, lo, f"the records of seq {lo} and seq {hi} exchanged places")
            reported |= {lo, hi}
        else:
            problems.add(
                ProblemKind.REORDERED, slot.seq, f"holds the record written as seq {slot.content_of}"
            )
            reported.add(slot.seq)


def _check_checkpoints(
    checkpoints: Sequence[Checkpoint],
    genuine: dict[int, _Slot],
    last: int,
    check: SignatureCheck,
    problems: _Problems,
) -> int:
    """Report checkpoint problems; return the last seq that a valid checkpoint covers."""
    valid: list[Checkpoint] = []
    ordered = sorted(checkpoints, key=lambda c: c.number)
    expected = 1
    for cp in ordered:
        for gone in range(expected, cp.number):
            problems.add(ProblemKind.CHECKPOINT, None, "the checkpoint is missing", checkpoint=gone)
        expected = cp.number + 1
        reason = check(cp.payload(), cp.signature)
        if reason is not None:
            problems.add(
                ProblemKind.CHECKPOINT,
                None,
                f"signature invalid for seq {cp.seq}: {reason}",
                checkpoint=cp.number,
            )
            continue
        valid.append(cp)
    if not valid:
        return 0
    newest = max(valid, key=lambda c: (c.seq, c.number))
    if newest.seq > last:
        problems.add(
            ProblemKind.TRUNCATED,
            last + 1,
            f"the chain ends at seq {last}, but signed checkpoint {newest.number} covers seq {newest.seq} "
            f"({_span(last + 1, newest.seq)} gone)",
        )
    origins = sorted(genuine)
    floor = 0
    rewritten = False  # after the first rewritten range, later head mismatches are its echo
    for cp in sorted(valid, key=lambda c: c.seq):
        if cp.seq > last:
            break
        slot = genuine.get(cp.seq)
        quiet = not problems.within(floor + 1, cp.seq)
        mismatch = slot is not None and slot.hash != cp.head_hash
        if mismatch and quiet and not rewritten:
            problems.add(
                ProblemKind.EDITED,
                cp.seq,
                f"{_span(floor + 1, cp.seq)} rewritten and re-hashed: the hash at seq {cp.seq} differs "
                f"from signed checkpoint {cp.number}",
            )
        held = bisect_right(origins, cp.seq)
        rewritten = rewritten or mismatch
        # A count off by what is already reported before this checkpoint is no news.
        if held != cp.count and not problems.within(1, cp.seq):
            kind = ProblemKind.DELETED if held < cp.count else ProblemKind.INSERTED
            problems.add(
                kind,
                cp.seq,
                f"signed checkpoint {cp.number} counts {cp.count} records up to seq {cp.seq}; "
                f"the chain holds {held}",
            )
        floor = cp.seq
    return min(newest.seq, last)
