"""The audit hash chain: intact chains verify; each kind of tampering is detected and located."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hub.adapters.crypto import Ed25519Signer, Ed25519Verifier, PublicKeyRegistry, key_id_for_public
from hub.domain.audit import (
    GENESIS,
    GENESIS_HASH,
    ChainBroken,
    ChainConflict,
    ChainHead,
    ChainReport,
    ChainRow,
    Checkpoint,
    ProblemKind,
    canonical_json,
    chain,
    index_of,
    link_hash,
    next_checkpoint,
    verify_chain,
)
from hub.services.audit import AppendToChain, AuditSearch, RecordAudit, hub_signature_check
from hub.services.crypto_port import KeyKind, KeyStatus, PublicKey, SignaturePurpose
from schemas.audit import (
    AuditAction,
    AuditAgent,
    AuditEntity,
    AuditEvent,
    AuditSource,
    AuditType,
    disclosure_event,
    transition_event,
)
from schemas.envelope import AgencyType, DeliveryCreated, Envelope, RiskLevel, TaskStatusChanged

T0 = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
ORGS = ["hub", "camhs-songjiang-mhc", "school-songjiang-no2-middle", "police-songjiang", "street-yueyang"]
_KEY = b"test checkpoint key"


# --------------------------------------------------------------------------------------------------
# Fakes and builders


def fake_sign(payload: bytes) -> str:
    return "hmac:" + hmac.new(_KEY, payload, hashlib.sha256).hexdigest()


def fake_check(payload: bytes, signature: str) -> str | None:
    return None if hmac.compare_digest(signature, fake_sign(payload)) else "signature does not match"


def event(i: int, **overrides: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "event_id": f"ev-{i:05d}",
        "type": AuditType.TRANSITION,
        "action": AuditAction.U,
        "recorded": T0 + timedelta(seconds=i),
        "agent": AuditAgent(org_id=ORGS[i % len(ORGS)], role="clinician", user_id=f"u{i % 7}"),
        "source": AuditSource.API,
        "entity": AuditEntity(referral_id=f"ref-{i // 3}", task_id=f"task-{i}", to_status="received"),
    }
    values.update(overrides)
    return AuditEvent(**values)


events_strategy = st.builds(
    lambda i, kind, org, cats, purpose, basis: event(
        i,
        type=kind,
        agent=AuditAgent(org_id=org, role="system"),
        entity=AuditEntity(referral_id=f"ref-{i % 5}", categories=cats),
        purpose=purpose,
        legal_basis=basis,
    ),
    st.integers(0, 10_000),
    st.sampled_from(list(AuditType)),
    st.sampled_from(ORGS),
    st.lists(st.sampled_from(["identity", "contact", "risk", "clinical", "screening"]), max_size=4),
    st.sampled_from([None, "treatment", "safeguarding", "crisis-intervention"]),
    st.sampled_from([None, "consent", "statutory", "emergency"]),
)


def unique_events(draw_list: list[AuditEvent]) -> list[AuditEvent]:
    return [e.model_copy(update={"event_id": f"ev-{n:05d}"}) for n, e in enumerate(draw_list)]


def build(events: Sequence[AuditEvent], every: int | None = None) -> tuple[list[ChainRow], list[Checkpoint]]:
    """A chain as AppendToChain writes it, with a signed checkpoint every ``every`` rows (and none else)."""
    rows: list[ChainRow] = []
    checkpoints: list[Checkpoint] = []
    head = GENESIS
    for e in events:
        [row] = chain(head, [e])
        rows.append(row)
        head = ChainHead(row.seq, row.hash)
        if every and row.seq % every == 0:
            checkpoints.append(
                sign(next_checkpoint(head, row.seq, checkpoints[-1] if checkpoints else None, T0))
            )
    return rows, checkpoints


def sign(cp: Checkpoint) -> Checkpoint:
    return dataclasses.replace(cp, signature=fake_sign(cp.payload()))


def verify(rows: Sequence[ChainRow], checkpoints: Sequence[Checkpoint] = ()) -> ChainReport:
    return verify_chain(rows, checkpoints, fake_check)


def found(report: ChainReport) -> list[tuple[ProblemKind, int | None]]:
    return [(p.kind, p.seq) for p in report.problems]


def rehash_from(rows: list[ChainRow], start: int) -> list[ChainRow]:
    """What an attacker with write access does: recompute every hash from index ``start`` on."""
    out = rows[:start]
    prev = out[-1].hash if out else GENESIS_HASH
    for row in rows[start:]:
        digest = link_hash(prev, row.payload, row.seq)
        out.append(dataclasses.replace(row, prev_hash=prev, hash=digest))
        prev = digest
    return out


def edited(row: ChainRow, **changes: Any) -> ChainRow:
    """The row with its agent changed, search columns kept in step (a careful attacker)."""
    document = json.loads(row.payload)
    document["agent"].update(changes)
    return dataclasses.replace(row, payload=canonical_json(document), index=index_of(document))


def renumber(rows: Sequence[ChainRow], first: int, by: int) -> list[ChainRow]:
    return [dataclasses.replace(r, seq=r.seq + by) if r.seq >= first else r for r in rows]


chains = st.lists(events_strategy, min_size=3, max_size=30).map(unique_events)


# --------------------------------------------------------------------------------------------------
# Intact chains


@settings(max_examples=60, deadline=None)
@given(chains, st.integers(1, 10))
def test_an_intact_chain_verifies(events: list[AuditEvent], every: int) -> None:
    rows, checkpoints = build(events, every)
    report = verify(rows, checkpoints)
    assert report.ok, report.problems
    assert report.events == len(events)
    assert report.head_seq == len(events)
    assert report.head_hash == rows[-1].hash
    assert report.checkpoints == len(events) // every
    assert report.unsealed == len(events) % every
    assert report.summary().startswith(f"chain intact: {len(events)} events, {len(checkpoints)} checkpoints")


def test_an_empty_chain_is_intact() -> None:
    report = verify([])
    assert report.ok
    assert (report.events, report.head_seq, report.head_hash) == (0, 0, GENESIS_HASH)


def test_the_hash_binds_prev_content_and_seq() -> None:
    [row] = chain(GENESIS, [event(1)])
    expected = hashlib.sha256(bytes.fromhex(GENESIS_HASH) + row.payload + (1).to_bytes(8, "big")).hexdigest()
    assert row.hash == expected
    assert link_hash(GENESIS_HASH, row.payload, 2) != row.hash
    assert link_hash("not hex", row.payload, 1) != row.hash


def test_canonical_bytes_do_not_depend_on_how_the_event_was_written() -> None:
    a = event(1, entity=AuditEntity(referral_id="r", categories=["risk", "identity"]))
    b = AuditEvent.model_validate_json(
        json.dumps(
            {
                **json.loads(a.model_dump_json()),
                "recorded": "2025-03-01T08:00:01+08:00",
                "entity": {"categories": ["identity", "risk", "risk"], "referral_id": "r"},
            }
        )
    )
    assert chain(GENESIS, [a])[0].payload == chain(GENESIS, [b])[0].payload


# --------------------------------------------------------------------------------------------------
# Tampering, one kind at a time: exactly one problem, at the right place


@settings(max_examples=60, deadline=None)
@given(chains, st.data())
def test_an_edited_field_is_found_at_its_seq(events: list[AuditEvent], data: st.DataObject) -> None:
    rows, checkpoints = build(events, every=4)
    k = data.draw(st.integers(1, len(rows)))
    rows[k - 1] = edited(rows[k - 1], org_id="someone-else")
    assert found(verify(rows, checkpoints)) == [(ProblemKind.EDITED, k)]


@settings(max_examples=60, deadline=None)
@given(chains, st.data())
def test_an_edit_rehashed_in_place_is_found_by_the_next_link(
    events: list[AuditEvent], data: st.DataObject
) -> None:
    rows, _ = build(events)
    k = data.draw(st.integers(1, len(rows) - 1))
    row = edited(rows[k - 1], role="auditor")
    rows[k - 1] = dataclasses.replace(row, hash=link_hash(row.prev_hash, row.payload, row.seq))
    report = verify(rows)
    assert found(report) == [(ProblemKind.EDITED, k)]
    assert f"seq {k + 1} still links to the original" in report.problems[0].detail


def test_an_edited_search_column_is_found() -> None:
    rows, _ = build([event(i) for i in range(6)])
    index = dict(rows[2].index or {})
    index["agent_org"] = "police-songjiang"
    rows[2] = dataclasses.replace(rows[2], index=index)
    report = verify(rows)
    assert found(report) == [(ProblemKind.EDITED, 3)]
    assert "agent_org" in report.problems[0].detail


def test_a_re_serialised_record_is_found() -> None:
    rows, _ = build([event(i) for i in range(4)])
    pretty = json.dumps(json.loads(rows[1].payload), indent=1).encode()
    rows[1] = dataclasses.replace(rows[1], payload=pretty, hash=link_hash(rows[1].prev_hash, pretty, 2))
    assert (ProblemKind.EDITED, 2) in found(verify(rows))


@settings(max_examples=60, deadline=None)
@given(chains, st.data())
def test_a_deleted_row_is_found(events: list[AuditEvent], data: st.DataObject) -> None:
    rows, checkpoints = build(events, every=5)
    k = data.draw(st.integers(1, len(rows) - 1))
    del rows[k - 1]
    report = verify(rows, checkpoints)
    assert found(report) == [(ProblemKind.DELETED, k)]
    assert f"seq {k} missing" in report.problems[0].detail


@settings(max_examples=60, deadline=None)
@given(chains, st.data())
def test_a_deleted_row_is_found_when_later_rows_are_renumbered(
    events: list[AuditEvent], data: st.DataObject
) -> None:
    rows, checkpoints = build(events, every=5)
    k = data.draw(st.integers(1, len(rows) - 1))
    del rows[k - 1]
    report = verify(renumber(rows, k + 1, -1), checkpoints)
    assert found(report) == [(ProblemKind.DELETED, k)]
    assert "renumbered" in report.problems[0].detail


@settings(max_examples=60, deadline=None)
@given(chains, st.data(), st.booleans())
def test_an_inserted_row_is_found(events: list[AuditEvent], data: st.DataObject, links: bool) -> None:
    rows, checkpoints = build(events, every=5)
    k = data.draw(st.integers(1, len(rows)))
    forged = event(99_999, agent=AuditAgent(org_id="intruder", role="admin"))
    prev = rows[k - 2].hash if k > 1 else GENESIS_HASH
    [row] = chain(ChainHead(k - 1, prev), [forged])
    if not links:  # an insert by someone who does not know how the chain is computed
        row = dataclasses.replace(row, hash="ab" * 32)
    stored = [*rows[: k - 1], row, *renumber(rows[k - 1 :], k, +1)]
    report = verify(stored, checkpoints)
    assert found(report) == [(ProblemKind.INSERTED, k)]


@settings(max_examples=60, deadline=None)
@given(chains, st.data())
def test_two_swapped_rows_are_found(events: list[AuditEvent], data: st.DataObject) -> None:
    rows, checkpoints = build(events, every=4)
    a, b = sorted(data.draw(st.lists(st.integers(1, len(rows)), min_size=2, max_size=2, unique=True)))
    ra, rb = rows[a - 1], rows[b - 1]
    rows[a - 1], rows[b - 1] = dataclasses.replace(rb, seq=a), dataclasses.replace(ra, seq=b)
    report = verify(rows, checkpoints)
    assert found(report) == [(ProblemKind.REORDERED, a)]
    assert f"seq {a} and seq {b}" in report.problems[0].detail


def test_swapped_contents_with_hashes_left_in_place_are_found() -> None:
    rows, _ = build([event(i) for i in range(8)])
    ra, rb = rows[1], rows[5]
    swap = ("payload", "event_id", "index")
    rows[1] = dataclasses.replace(ra, **{f: getattr(rb, f) for f in swap})
    rows[5] = dataclasses.replace(rb, **{f: getattr(ra, f) for f in swap})
    report = verify(rows)
    assert found(report) == [(ProblemKind.REORDERED, 2)]
    assert "seq 2 and seq 6" in report.problems[0].detail


def test_one_row_moved_elsewhere_is_found() -> None:
    rows, _ = build([event(i) for i in range(10)])
    moved = rows.pop(2)  # written as seq 3, now stored as seq 11 (the chain had a hole)
    rows = [*rows[:2], *renumber(rows[2:], 4, -1), dataclasses.replace(moved, seq=10)]
    problems = found(verify(rows))
    assert (ProblemKind.REORDERED, 10) in problems


@settings(max_examples=60, deadline=None)
@given(chains, st.data())
def test_truncation_after_a_checkpoint_is_found(events: list[AuditEvent], data: st.DataObject) -> None:
    rows, checkpoints = build(events, every=3)
    if not checkpoints:
        return
    keep = data.draw(st.integers(0, checkpoints[-1].seq - 1))
    report = verify(rows[:keep], checkpoints)
    assert found(report) == [(ProblemKind.TRUNCATED, keep + 1)]
    assert f"ends at seq {keep}" in report.problems[0].detail


def test_truncation_after_the_last_checkpoint_goes_unnoticed_but_is_reported_as_unsealed() -> None:
    rows, checkpoints = build([event(i) for i in range(10)], every=4)
    report = verify(rows, checkpoints)
    assert (report.sealed_seq, report.unsealed) == (8, 2)
    assert verify(rows[:9], checkpoints).ok  # the reason checkpoints come every few seconds


@settings(max_examples=40, deadline=None)
@given(chains, st.data())
def test_a_full_rewrite_after_an_edit_is_caught_by_the_checkpoint(
    events: list[AuditEvent], data: st.DataObject
) -> None:
    rows, checkpoints = build(events, every=3)
    if not checkpoints:
        return
    k = data.draw(st.integers(1, checkpoints[-1].seq))
    rows[k - 1] = edited(rows[k - 1], role="auditor")
    report = verify(rehash_from(rows, k - 1), checkpoints)
    covering = next(cp for cp in checkpoints if cp.seq >= k)
    assert found(report) == [(ProblemKind.EDITED, covering.seq)]
    assert f"checkpoint {covering.number}" in report.problems[0].detail


def test_a_forged_checkpoint_signature_is_found() -> None:
    rows, checkpoints = build([event(i) for i in range(9)], every=3)
    checkpoints[1] = dataclasses.replace(checkpoints[1], signature=fake_sign(b"something else"))
    report = verify(rows, checkpoints)
    assert [(p.kind, p.checkpoint) for p in report.problems] == [(ProblemKind.CHECKPOINT, 2)]
    assert str(report.problems[0]).startswith("checkpoint 2: checkpoint: signature invalid")


def test_a_checkpoint_edited_without_re_signing_is_found() -> None:
    rows, checkpoints = build([event(i) for i in range(9)], every=3)
    rewritten = rehash_from([*rows[:4], edited(rows[4], role="x"), *rows[5:]], 4)
    # The attacker also points the checkpoints at the new hashes, but cannot sign them.
    forged = [dataclasses.replace(cp, head_hash=rewritten[cp.seq - 1].hash) for cp in checkpoints]
    report = verify(rewritten, forged)
    assert [(p.kind, p.checkpoint) for p in report.problems] == [
        (ProblemKind.CHECKPOINT, 2),
        (ProblemKind.CHECKPOINT, 3),
    ]


def test_a_deleted_checkpoint_is_found() -> None:
    rows, checkpoints = build([event(i) for i in range(9)], every=3)
    del checkpoints[1]
    report = verify(rows, checkpoints)
    assert [(p.kind, p.checkpoint) for p in report.problems] == [(ProblemKind.CHECKPOINT, 2)]
    assert "missing" in report.problems[0].detail


def test_checkpoints_verify_with_the_hubs_ed25519_key_and_no_other() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    hub_key, other_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    hub = Ed25519Signer("hub", hub_key)
    public = hub_key.public_key().public_bytes_raw()
    registry = PublicKeyRegistry(
        [PublicKey("hub", KeyKind.ED25519, key_id_for_public(public), public, KeyStatus.ACTIVE)]
    )
    check = hub_signature_check(Ed25519Verifier(registry))
    rows, _ = build([event(i) for i in range(4)])
    cp = next_checkpoint(ChainHead(4, rows[-1].hash), 4, None, T0)
    good = dataclasses.replace(
        cp, signature=hub.sign(cp.payload(), purpose=SignaturePurpose.AUDIT_CHECKPOINT)
    )
    assert good.key_id == hub.key_id
    assert verify_chain(rows, [good], check).ok
    wrong_purpose = dataclasses.replace(
        cp, signature=hub.sign(cp.payload(), purpose=SignaturePurpose.DELIVERY)
    )
    stranger = dataclasses.replace(
        cp,
        signature=Ed25519Signer("hub", other_key).sign(
            cp.payload(), purpose=SignaturePurpose.AUDIT_CHECKPOINT
        ),
    )
    for bad in (wrong_purpose, stranger):
        report = verify_chain(rows, [bad], check)
        assert [(p.kind, p.checkpoint) for p in report.problems] == [(ProblemKind.CHECKPOINT, 1)]
    assert "signature-unknown-key" in verify_chain(rows, [stranger], check).problems[0].detail


# --------------------------------------------------------------------------------------------------
# Services against an in-memory store


class MemoryAuditStore:
    def __init__(self) -> None:
        self.stored: list[ChainRow] = []
        self.cps: list[Checkpoint] = []

    def head(self) -> ChainHead | None:
        return ChainHead(self.stored[-1].seq, self.stored[-1].hash) if self.stored else None

    def count(self, upto_seq: int | None = None) -> int:
        return sum(1 for r in self.stored if upto_seq is None or r.seq <= upto_seq)

    def existing(self, event_ids: Sequence[str]) -> set[str]:
        return {r.event_id for r in self.stored} & set(event_ids)

    def insert(self, rows: Sequence[ChainRow]) -> None:
        head = self.head() or GENESIS
        if rows[0].seq != head.seq + 1 or rows[0].prev_hash != head.hash:
            raise ChainConflict("head moved")
        if self.existing([r.event_id for r in rows]):
            raise ChainConflict("event id taken")
        self.stored.extend(rows)

    def rows(self, after_seq: int = 0, batch: int = 1000) -> Iterator[ChainRow]:
        return iter([r for r in self.stored if r.seq > after_seq])

    def latest_checkpoint(self) -> Checkpoint | None:
        return self.cps[-1] if self.cps else None

    def checkpoints(self) -> list[Checkpoint]:
        return list(self.cps)

    def insert_checkpoint(self, checkpoint: Checkpoint) -> None:
        if any(c.number == checkpoint.number for c in self.cps):
            raise ChainConflict("taken")
        self.cps.append(checkpoint)

    def search(self, query: AuditSearch) -> list[tuple[int, str, bytes]]:
        raise NotImplementedError


class FakeSigner:
    owner = "hub"
    key_id = "fake"

    def sign(self, data: bytes, *, purpose: SignaturePurpose) -> str:
        assert purpose == SignaturePurpose.AUDIT_CHECKPOINT
        return fake_sign(data)


class FixedClock:
    def now(self) -> datetime:
        return T0


def test_append_is_idempotent_by_event_id_and_checkpoints_every_n() -> None:
    store = MemoryAuditStore()
    append = AppendToChain(store, FakeSigner(), FixedClock(), every=4)
    first = append([event(i) for i in range(3)])
    assert [r.seq for r in first.rows] == [1, 2, 3]
    assert first.checkpoint is None
    again = append([event(1), event(2), event(3), event(3)])  # a redelivered batch with one new event
    assert ([r.seq for r in again.rows], again.duplicates) == ([4], 3)
    assert again.checkpoint is not None
    assert (again.checkpoint.number, again.checkpoint.seq) == (1, 4)
    assert append([event(1)]).rows == []
    assert append.checkpoint() is None  # nothing new since checkpoint 1
    append([event(9)])
    made = append.checkpoint()
    assert made is not None
    assert (made.number, made.seq, made.count) == (2, 5, 5)
    assert verify_chain(store.stored, store.cps, fake_check).ok


def test_a_second_writer_with_a_stale_head_retries_and_keeps_the_chain_whole() -> None:
    store = MemoryAuditStore()
    one = AppendToChain(store, FakeSigner(), FixedClock())
    two = AppendToChain(store, FakeSigner(), FixedClock())
    one([event(1)])
    two([event(2)])  # two's cached head is now stale
    one([event(3)])
    two([event(3), event(4)])
    assert [r.event_id for r in store.stored] == ["ev-00001", "ev-00002", "ev-00003", "ev-00004"]
    assert verify_chain(store.stored, [], fake_check).ok


def test_no_checkpoint_is_signed_over_a_chain_that_was_tampered_with() -> None:
    store = MemoryAuditStore()
    append = AppendToChain(store, FakeSigner(), FixedClock(), every=3)
    append([event(i) for i in range(3)])
    append([event(i) for i in range(3, 5)])
    store.stored[3] = edited(store.stored[3], role="auditor")  # seq 4, after checkpoint 1
    with pytest.raises(ChainBroken, match="seq 4 does not match its hash"):
        append.checkpoint()
    assert [r.seq for r in append([event(5)]).rows] == [6]  # still appended; no checkpoint made
    assert [c.number for c in store.cps] == [1]


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Envelope]] = []

    async def publish(self, topic: str, key: str, event: Envelope) -> None:
        self.sent.append((topic, key, event))


async def test_record_audit_publishes_on_the_prefixed_audit_topic() -> None:
    publisher = RecordingPublisher()
    await RecordAudit(publisher, lambda name: f"t1.{name}").record(event(3))
    await RecordAudit(publisher, "exact.topic").record(event(4, entity=AuditEntity()))
    assert [(t, k) for t, k, _ in publisher.sent] == [
        ("t1.audit.events", "ref-1"),
        ("exact.topic", "ev-00004"),
    ]


# --------------------------------------------------------------------------------------------------
# The event itself: ids and codes only


@pytest.mark.parametrize(
    "field_values",
    [
        {"agent": {"org_id": "camhs-songjiang-mhc", "user_id": "张 医生"}},
        {"agent": {"org_id": "Dr Wang Li"}},
        {"entity": {"referral_id": "ref-1", "detail": "student said she wants to die"}},
        {"purpose": "curiosity"},
        {"legal_basis": "because"},
        {"entity": {"categories": ["shoe-size"]}},
        {"outcome": {"code": "failure", "reason": "Patient Zhang not found"}},
        {"recorded": "2025-03-01T08:00:00"},
        {"nickname": "x"},
    ],
)
def test_an_audit_event_refuses_free_text_unknown_codes_and_naive_times(field_values: dict[str, Any]) -> None:
    base = json.loads(event(1).model_dump_json())
    with pytest.raises(ValidationError):
        AuditEvent.model_validate({**base, **field_values})


def test_pipeline_events_map_to_audit_events_with_stable_ids() -> None:
    delivery = DeliveryCreated(
        event_id="d-ev-1",
        delivery_id="dlv-1",
        referral_id="ref-1",
        task_id="task-1",
        recipient_org="camhs-songjiang-mhc",
        recipient_type=AgencyType.CAMHS,
        sender_org="school-songjiang-no2-middle",
        purpose="treatment",
        legal_basis="consent",
        categories=["risk", "identity"],
        priority="urgent",
        risk_level=RiskLevel.HIGH,
        reasons=["suicidal-ideation"],
        rule_id="clinical-high",
        ruleset_version="rs-abc123",
        created_at=T0,
    )
    disclosed = disclosure_event(delivery)
    assert disclosed.event_id == disclosure_event(delivery).event_id  # a redelivery chains once
    assert (disclosed.type, disclosed.action, disclosed.entity.org_id) == (
        AuditType.DISCLOSURE,
        AuditAction.C,
        "camhs-songjiang-mhc",
    )
    assert (disclosed.purpose, disclosed.legal_basis, disclosed.entity.categories) == (
        "treatment",
        "consent",
        ["identity", "risk"],
    )
    change = TaskStatusChanged(
        event_id="s-ev-1",
        task_id="task-1",
        referral_id="ref-1",
        delivery_id="dlv-1",
        from_status="requested",
        to_status="received",
        actor_org="camhs-songjiang-mhc",
        actor_role="clinician",
        at=T0,
    )
    moved = transition_event(change)
    assert moved.event_id != disclosed.event_id
    assert index_of(json.loads(chain(GENESIS, [moved])[0].payload))["agent_org"] == "camhs-songjiang-mhc"
