"""The audit chain on the real hub: events on the audit topic are chained in PostgreSQL, sealed by
signed checkpoints, and `hub audit verify` passes on a clean chain and names each kind of tampering."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer

from hub.adapters.auditstore import SqlAuditStore, audit_checkpoints, audit_log
from hub.adapters.kafka import encode
from hub.domain.audit import ChainHead, chain, link_hash
from hub.services.audit import AuditQueries, AuditSearch, hub_signature_check
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
from schemas.envelope import AgencyType, DeliveryCreated, RiskLevel, TaskStatusChanged
from tests.support.hub import REPO, RunningHub

pytestmark = pytest.mark.integration

CAMHS = "camhs-songjiang-mhc"
SCHOOL = "school-songjiang-no2-middle"
EVENTS = 12


@dataclass
class Chained:
    hub: RunningHub
    engine: sa.Engine
    events: list[AuditEvent]


def audit_cli(hub: RunningHub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "audit", *args],
        env=hub.env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def referral_events(n: int) -> list[AuditEvent]:
    """What the pipeline records for a few referrals: disclosures, transitions, an access."""
    t0 = datetime.now(UTC).replace(microsecond=0)
    out: list[AuditEvent] = []
    for i in range(n):
        referral, task = f"ref-{uuid.uuid4().hex[:10]}", f"task-{uuid.uuid4().hex[:10]}"
        at = t0 + timedelta(seconds=i)
        if i % 3 == 0:
            out.append(
                disclosure_event(
                    DeliveryCreated(
                        event_id=str(uuid.uuid4()),
                        delivery_id=f"dlv-{uuid.uuid4().hex[:10]}",
                        referral_id=referral,
                        task_id=task,
                        recipient_org=CAMHS,
                        recipient_type=AgencyType.CAMHS,
                        sender_org=SCHOOL,
                        purpose="treatment",
                        legal_basis="consent",
                        categories=["identity", "risk", "screening"],
                        priority="urgent",
                        risk_level=RiskLevel.HIGH,
                        reasons=["suicidal-ideation"],
                        rule_id="clinical-high",
                        ruleset_version="rs-test",
                        created_at=at,
                    )
                )
            )
        elif i % 3 == 1:
            out.append(
                transition_event(
                    TaskStatusChanged(
                        event_id=str(uuid.uuid4()),
                        task_id=task,
                        referral_id=referral,
                        delivery_id=f"dlv-{i}",
                        from_status="requested",
                        to_status="received",
                        actor_org=CAMHS,
                        actor_role="clinician",
                        at=at,
                    )
                )
            )
        else:
            out.append(
                AuditEvent(
                    event_id=str(uuid.uuid4()),
                    type=AuditType.ACCESS,
                    action=AuditAction.R,
                    recorded=at,
                    agent=AuditAgent(org_id=CAMHS, role="clinician", user_id="u-0042"),
                    source=AuditSource.API,
                    entity=AuditEntity(referral_id=referral, task_id=task, org_id=SCHOOL),
                )
            )
    return out


def publish(hub: RunningHub, values: list[bytes], keys: list[str]) -> None:
    producer = KafkaProducer(bootstrap_servers=hub.env["HUB_KAFKA__BOOTSTRAP"], acks="all")
    try:
        for key, value in zip(keys, values, strict=True):
            producer.send(f"{hub.prefix}audit.events", key=key.encode(), value=value)
        producer.flush(30)
    finally:
        producer.close()


def wait_for(condition: Any, what: str, hub: RunningHub, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\nworker log:\n{hub.log('worker')}")


def scalar(engine: sa.Engine, query: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(query).scalar()


@pytest.fixture(scope="module")
def chained(hub: RunningHub) -> Iterator[Chained]:
    """A chain built by the real worker, sealed by its timer; then the worker is stopped so tampering
    tests see exactly the rows they change."""
    engine = sa.create_engine(hub.env["HUB_DATABASE_URL"])
    events = referral_events(EVENTS)
    # A malformed record and a redelivered event travel with them: one dead letter, no duplicate.
    values = [encode(e) for e in events]
    keys = [e.entity.referral_id or e.event_id for e in events]
    publish(hub, [*values[:5], b"{not json", *values[5:], values[3]], [*keys[:5], "junk", *keys[5:], keys[3]])
    ids = [e.event_id for e in events]
    wait_for(
        lambda: scalar(engine, sa.select(sa.func.count()).where(audit_log.c.event_id.in_(ids))) == EVENTS,
        "the audit events to be chained",
        hub,
    )
    wait_for(
        lambda: (scalar(engine, sa.select(sa.func.max(audit_checkpoints.c.seq))) or 0) >= EVENTS,
        "the checkpoint timer to seal the head",
        hub,
        timeout=40,
    )
    hub.stop("worker")
    try:
        yield Chained(hub, engine, events)
    finally:
        engine.dispose()


@contextmanager
def tampered(engine: sa.Engine) -> Iterator[sa.Connection]:
    """Run tampering SQL, then put every row back as it was."""
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(audit_log)).mappings()]
        cps = [dict(r) for r in conn.execute(sa.select(audit_checkpoints)).mappings()]
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        with engine.begin() as conn:
            conn.execute(audit_log.delete())
            conn.execute(audit_checkpoints.delete())
            conn.execute(audit_log.insert(), rows)
            conn.execute(audit_checkpoints.insert(), cps)


def row(conn: sa.Connection, seq: int) -> dict[str, Any]:
    return dict(conn.execute(sa.select(audit_log).where(audit_log.c.seq == seq)).mappings().one())


def assert_caught(chained: Chained, *expected: str) -> str:
    done = audit_cli(chained.hub, "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    for line in expected:
        assert line in done.stdout, done.stdout
    # Exactly one problem: the tampering is located, and the previous test's rows were restored.
    assert "chain broken: 1 problem(s)" in done.stdout, done.stdout
    return done.stdout


# --------------------------------------------------------------------------------------------------


def test_the_worker_chains_each_event_once_and_the_clean_chain_verifies(chained: Chained) -> None:
    with chained.engine.connect() as conn:
        stored = list(
            conn.execute(sa.select(audit_log.c.seq, audit_log.c.event_id).order_by(audit_log.c.seq))
        )
    assert [r.event_id for r in stored] == [e.event_id for e in chained.events]  # topic order, once each
    assert [r.seq for r in stored] == list(range(1, EVENTS + 1))
    done = audit_cli(chained.hub, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"chain intact: {EVENTS} events, ")
    assert "checkpoints, head 12:" in done.stdout


def test_verification_needs_only_the_public_key(chained: Chained, tmp_path: Any) -> None:
    exported = subprocess.run(
        [sys.executable, "-m", "hub", "keys", "export-public", "--owner", "hub"],
        env=chained.hub.env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    public = tmp_path / "hub-public.json"
    public.write_text(exported.stdout)
    env = {**chained.hub.env, "HUB_KEYS__STORE_DIR": str(tmp_path / "no-store")}
    done = subprocess.run(
        [sys.executable, "-m", "hub", "audit", "verify", "--public-keys", str(public)],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_auditors_search_by_referral_agency_time_and_type(chained: Chained) -> None:
    queries = AuditQueries(SqlAuditStore(chained.engine), lambda payload, signature: None)
    disclosure = chained.events[0]
    [found] = queries.search(AuditSearch(referral_id=disclosure.entity.referral_id)).items
    assert (found["seq"], found["event"]["event_id"]) == (1, disclosure.event_id)
    assert found["event"]["legal_basis"] == "consent"

    # CAMHS is the recipient of the disclosures, not the actor: the agency filter finds both roles.
    disclosures = queries.search(AuditSearch(agency=CAMHS, type=AuditType.DISCLOSURE)).items
    assert len(disclosures) == EVENTS // 3
    assert len(queries.search(AuditSearch(agency=CAMHS)).items) == EVENTS

    local = ZoneInfo("Asia/Shanghai")
    window = AuditSearch(since=chained.events[4].recorded.astimezone(local), until=chained.events[7].recorded)
    assert [i["seq"] for i in queries.search(window).items] == [5, 6, 7]

    first = queries.search(AuditSearch(limit=5))
    rest = queries.search(AuditSearch(after_seq=first.next_after or 0, limit=500))
    assert (len(first.items), first.next_after) == (5, 5)
    assert [i["seq"] for i in rest.items] == list(range(6, EVENTS + 1))
    assert rest.next_after is None

    table = audit_cli(chained.hub, "search", "--referral", disclosure.entity.referral_id or "")
    assert table.returncode == 0, table.stderr
    assert "disclosure" in table.stdout
    assert "treatment/consent" in table.stdout
    as_json = json.loads(
        audit_cli(chained.hub, "search", "--agency", CAMHS, "--type", "access", "--json").stdout
    )
    assert {i["event"]["type"] for i in as_json["items"]} == {"access"}


def test_the_audit_api_pages_events_and_reports_the_chain(chained: Chained) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from hub.adapters.crypto import Ed25519Verifier
    from hub.adapters.keystore import KeyStore
    from hub.api.routes import audit as audit_routes
    from hub.settings import KeySettings

    keys = KeyStore.open(
        KeySettings(
            store_dir=chained.hub.var_dir / "keys", master_key_file=chained.hub.var_dir / "master.key"
        )
    )
    app = FastAPI()
    app.include_router(audit_routes.router)
    app.state.audit = AuditQueries(
        SqlAuditStore(chained.engine), hub_signature_check(Ed25519Verifier(keys.public_registry()))
    )
    with TestClient(app) as client:
        page = client.get("/v1/audit/events", params={"agency": CAMHS, "limit": 3}).json()
        assert (page["count"], page["next_after"]) == (3, 3)
        assert page["items"][0]["event"]["agent"]["org_id"] == "hub"
        report = client.get("/v1/audit/verify").json()
    assert report["ok"] is True
    assert (report["events"], report["head_seq"], report["sealed_seq"]) == (EVENTS, EVENTS, EVENTS)


def test_a_malformed_audit_record_becomes_a_dead_letter(chained: Chained) -> None:
    consumer = KafkaConsumer(
        f"{chained.hub.prefix}deadletters",
        bootstrap_servers=chained.hub.env["HUB_KAFKA__BOOTSTRAP"],
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        letters = [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()
    ours = [d for d in letters if d["step"] == "chain_audit"]
    assert [(d["reason_code"], d["source_topic"]) for d in ours] == [
        ("not-json", f"{chained.hub.prefix}audit.events")
    ]


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("edit-payload", ["seq 5: edited"]),
        ("edit-column", ["seq 4: edited", "agent_org"]),
        ("delete", ["seq 7: deleted", "seq 7 missing"]),
        ("insert", ["seq 3: inserted"]),
        ("swap", ["seq 2: reordered", "seq 2 and seq 9 exchanged"]),
        ("truncate", ["seq 9: truncated", "ends at seq 8"]),
        ("rewrite", ["edited", "differs from signed checkpoint"]),
        ("forge-checkpoint", ["signature invalid"]),
    ],
)
def test_each_kind_of_tampering_is_caught_and_located(
    chained: Chained, tamper: str, expected: list[str]
) -> None:
    with tampered(chained.engine) as conn:
        TAMPER[tamper](conn)
        conn.commit()
        assert_caught(chained, *expected)


def _edit_payload(conn: sa.Connection) -> None:
    payload = row(conn, 5)["payload"].replace(':"camhs-songjiang-mhc"', ':"police-songjiang"', 1)
    conn.execute(audit_log.update().where(audit_log.c.seq == 5).values(payload=payload))


def _edit_column(conn: sa.Connection) -> None:
    conn.execute(audit_log.update().where(audit_log.c.seq == 4).values(agent_org="police-songjiang"))


def _delete(conn: sa.Connection) -> None:
    conn.execute(audit_log.delete().where(audit_log.c.seq == 7))


def _insert(conn: sa.Connection) -> None:
    # Make room at seq 3 (two steps: PostgreSQL checks the primary key row by row), then forge a row
    # that links properly to seq 2, as someone who knows the hash rule would.
    conn.execute(audit_log.update().where(audit_log.c.seq >= 3).values(seq=-audit_log.c.seq))
    conn.execute(audit_log.update().where(audit_log.c.seq < 0).values(seq=1 - audit_log.c.seq))
    before = row(conn, 2)
    forged = AuditEvent(
        event_id=str(uuid.uuid4()),
        type=AuditType.ACCESS,
        action=AuditAction.R,
        recorded=datetime.now(UTC),
        agent=AuditAgent(org_id=CAMHS, role="clinician"),
        source=AuditSource.API,
        entity=AuditEntity(referral_id="ref-forged"),
    )
    [new] = chain(ChainHead(2, before["hash"]), [forged])
    conn.execute(
        audit_log.insert().values(
            seq=new.seq,
            event_id=new.event_id,
            prev_hash=new.prev_hash,
            hash=new.hash,
            payload=new.payload.decode(),
            **{k: v for k, v in (new.index or {}).items() if k != "event_id"},
        )
    )


def _swap(conn: sa.Connection) -> None:
    conn.execute(audit_log.update().where(audit_log.c.seq == 2).values(seq=-2))
    conn.execute(audit_log.update().where(audit_log.c.seq == 9).values(seq=2))
    conn.execute(audit_log.update().where(audit_log.c.seq == -2).values(seq=9))


def _truncate(conn: sa.Connection) -> None:
    conn.execute(audit_log.delete().where(audit_log.c.seq > 8))


def _rewrite(conn: sa.Connection) -> None:
    # Edit seq 4 and recompute every later hash: the links agree again, only the signature cannot.
    prev = row(conn, 3)["hash"]
    for seq in range(4, EVENTS + 1):
        r = row(conn, seq)
        payload = (
            r["payload"].replace('"camhs-songjiang-mhc"', '"police-songjiang"') if seq == 4 else r["payload"]
        )
        digest = link_hash(prev, payload.encode(), seq)
        values = {"payload": payload, "prev_hash": prev, "hash": digest}
        if seq == 4:
            document = json.loads(payload)
            values["agent_org"] = document["agent"]["org_id"]
            values["entity_org"] = (document.get("entity") or {}).get("org_id")
        conn.execute(audit_log.update().where(audit_log.c.seq == seq).values(**values))
        prev = digest


def _forge_checkpoint(conn: sa.Connection) -> None:
    latest = conn.execute(sa.select(sa.func.max(audit_checkpoints.c.number))).scalar_one()
    conn.execute(
        audit_checkpoints.update().where(audit_checkpoints.c.number == latest).values(count=EVENTS + 5)
    )


TAMPER = {
    "edit-payload": _edit_payload,
    "edit-column": _edit_column,
    "delete": _delete,
    "insert": _insert,
    "swap": _swap,
    "truncate": _truncate,
    "rewrite": _rewrite,
    "forge-checkpoint": _forge_checkpoint,
}
