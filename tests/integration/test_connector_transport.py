"""Connectors against the real hub per transport: 1,000-row school files, re-runs, a killed import, HL7."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.school.generate import rows, write
from tests.support.hub import RunningHub
from tests.support.servers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


def _key(hub: RunningHub, org: str) -> str:
    """An API key made in-process (``hub apikey create`` as a subprocess is slow on a loaded machine)."""
    if org not in hub.keys:
        from hub.adapters.apikey import ApiKeyStore

        engine = sa.create_engine(hub.env["HUB_DATABASE_URL"])
        try:
            hub.keys[org] = ApiKeyStore(engine).create(org)
        finally:
            engine.dispose()
    return hub.keys[org]


def _env(hub: RunningHub, org: str, state: Path, transport: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "QIXIN_CONNECTOR_"))}
    env.update(
        {
            "QIXIN_CONNECTOR_AGENCY": org,
            "QIXIN_CONNECTOR_ENDPOINT": hub.base_url,
            "QIXIN_CONNECTOR_API_KEY": _key(hub, org),
            "QIXIN_CONNECTOR_TRANSPORT": transport,
            "QIXIN_CONNECTOR_HUB_VAR_DIR": str(hub.var_dir),
            "QIXIN_CONNECTOR_TOPIC_PREFIX": hub.prefix,
            "QIXIN_CONNECTOR_KAFKA_BOOTSTRAP": hub.env["HUB_KAFKA__BOOTSTRAP"],
            "QIXIN_CONNECTOR_STATE_DIR": str(state),
        }
    )
    env.update(extra)
    return env


def _cli(env: dict[str, str], *args: str, timeout: float = 600) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "hub", "connector", *args, "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode in (0, 2), done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _school_file(tmp: Path, school: str, seed: int, day: date, count: int = 1000) -> Path:
    path = tmp / f"{school}-{seed}.csv"
    write(path, list(rows(count, school, seed=seed, screening=day)))
    return path


def _db_count(hub: RunningHub, sender: str) -> int:
    engine = sa.create_engine(hub.env["HUB_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT count(*) FROM referrals WHERE sender_org = :s"), {"s": sender}
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _wait_count(hub: RunningHub, sender: str, expected: int, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    count = _db_count(hub, sender)
    while count < expected and time.monotonic() < deadline:
        time.sleep(1)
        count = _db_count(hub, sender)
    return count


def _deliveries(
    hub: RunningHub, org: str, referral_ids: list[str], timeout: float = 240
) -> dict[str, list[dict[str, Any]]]:
    """Each referral's deliveries as the sender sees them, once routing gave it at least one."""
    found: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout
    _key(hub, org)
    with hub.client(org) as client:
        while time.monotonic() < deadline and len(found) < len(referral_ids):
            for rid in referral_ids:
                if rid in found:
                    continue
                answer = client.get(f"/v1/referrals/{rid}")
                if answer.status_code == 200 and answer.json()["deliveries"]:
                    found[rid] = answer.json()["deliveries"]
            if len(found) < len(referral_ids):
                time.sleep(1)
    missing = sorted(set(referral_ids) - set(found))
    assert not missing, f"{len(missing)} referrals never routed, e.g. {missing[:3]}\n{hub.log('worker')}"
    return found


def _inbox_ids(hub: RunningHub, org: str) -> set[str]:
    ids: set[str] = set()
    offset: int | None = 0
    _key(hub, org)
    with hub.client(org) as client:
        while offset is not None:
            page = client.get("/v1/inbox", params={"limit": 500, "offset": offset}).json()
            ids |= {i["referral_id"] for i in page["items"]}
            offset = page.get("next_offset")
    return ids


@pytest.mark.parametrize(
    ("transport", "school", "seed", "day"),
    [
        ("https", "school-songjiang-no2-middle", 7, date(2026, 11, 20)),
        ("kafka", "school-songjiang-no1-middle", 8, date(2026, 11, 21)),
    ],
)
def test_thousand_rows_reach_the_inboxes_and_a_rerun_adds_nothing(
    hub: RunningHub, tmp_path: Path, transport: str, school: str, seed: int, day: date
) -> None:
    source = _school_file(tmp_path, school, seed, day)
    env = _env(hub, school, tmp_path / "state", transport)
    report = _cli(env, "school", "import", str(source))
    assert report["rows"] == 1000
    assert report["dead_letters"] == 0
    assert report["bad_rows"] == []
    assert report["sent_new"] == report["records"] > 50
    referral_ids = [s["referral_id"] for s in report["sent"]]
    assert _wait_count(hub, school, len(referral_ids)) == len(referral_ids)

    deliveries = _deliveries(hub, school, referral_ids)
    by_recipient: dict[str, set[str]] = {}
    for rid, items in deliveries.items():
        for d in items:
            by_recipient.setdefault(d["recipient_org"], set()).add(rid)
    for recipient, expected in by_recipient.items():
        assert expected <= _inbox_ids(hub, recipient), f"missing from {recipient}'s inbox"

    again = _cli(env, "school", "import", str(source))
    assert again["sent_new"] == 0
    assert again["sent_already"] == len(referral_ids)
    # Even with the outbox lost, the same file re-sends the same message ids and the hub adds nothing.
    for leftover in (tmp_path / "state").glob(f"{school}.outbox.sqlite*"):
        leftover.unlink()
    resent = _cli(env, "school", "import", str(source))
    assert sorted(s["referral_id"] for s in resent["sent"]) == sorted(referral_ids)
    time.sleep(5)
    assert _db_count(hub, school) == len(referral_ids)
    assert {rid: len(d) for rid, d in _deliveries(hub, school, referral_ids).items()} == {
        rid: len(d) for rid, d in deliveries.items()
    }


def _sent_in_outbox(path: Path) -> tuple[int, int, int]:
    """(records sent, records with more than one recorded send, records not sent)."""
    if not path.exists():
        return 0, 0, 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        sent, doubled, other = db.execute(
            "SELECT sum(state = 'sent'), sum(sends > 1), sum(state != 'sent') FROM record"
        ).fetchone()
    except sqlite3.OperationalError:
        return 0, 0, 0
    finally:
        db.close()
    return int(sent or 0), int(doubled or 0), int(other or 0)


@pytest.mark.parametrize(
    ("transport", "school", "seed"),
    [("https", "school-sijing-middle", 9), ("kafka", "school-jiuting-middle", 10)],
)
def test_killed_half_way_and_rerun_sends_every_referral_once(
    hub: RunningHub, tmp_path: Path, transport: str, school: str, seed: int
) -> None:
    source = _school_file(tmp_path, school, seed, date(2026, 11, 22))
    state = tmp_path / "state"
    env = _env(
        hub, school, state, transport, QIXIN_CONNECTOR_CONCURRENCY="1", QIXIN_CONNECTOR_KAFKA_BATCH="5"
    )
    eligible = _cli(env, "school", "import", str(source), "--dry-run")["records"]
    outbox = state / f"{school}.outbox.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "connector", "school", "import", str(source)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while (
            _sent_in_outbox(outbox)[0] < eligible // 3 and proc.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert proc.poll() is None, "the import finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    sent_before, _, _ = _sent_in_outbox(outbox)
    assert 0 < sent_before < eligible

    report = _cli(env, "school", "import", str(source))
    assert report["sent_new"] + report["sent_already"] == eligible
    assert report["sent_already"] >= sent_before
    sent, doubled, unsent = _sent_in_outbox(outbox)
    assert (sent, doubled, unsent) == (eligible, 0, 0)
    assert _wait_count(hub, school, eligible) == eligible
    time.sleep(5)
    assert _db_count(hub, school) == eligible


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _mllp(port: int, message: str) -> str:
    from hl7.mllp import open_hl7_connection

    reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
    writer.writeblock(message.encode("utf-8"))
    await writer.drain()
    reply = (await asyncio.wait_for(reader.readblock(), 120)).decode("utf-8")
    writer.close()
    return reply


def _delivery_status(
    hub: RunningHub, school: str, referral_id: str, recipient: str
) -> tuple[str, str | None]:
    _key(hub, school)
    with hub.client(school) as client:
        body = client.get(f"/v1/referrals/{referral_id}").json()
    [d] = [d for d in body["deliveries"] if d["recipient_org"] == recipient]
    return d["status"], d["business_status"]


def test_hl7_acknowledgement_round_trip_changes_the_status_the_school_sees(
    hub: RunningHub, tmp_path: Path
) -> None:
    import hl7

    school = "school-xinqiao-middle"
    source = _school_file(tmp_path, school, 12, date(2026, 11, 23), count=150)
    report = _cli(_env(hub, school, tmp_path / "school-state", "https"), "school", "import", str(source))
    referral_ids = [s["referral_id"] for s in report["sent"]]
    deliveries = _deliveries(hub, school, referral_ids)
    target = next(
        (rid, d)
        for rid, items in deliveries.items()
        for d in items
        if d["recipient_org"].startswith("camhs-")
    )
    referral_id, delivery = target
    camhs = delivery["recipient_org"]

    his_dir = tmp_path / "his"
    hospital_env = _env(
        hub, camhs, tmp_path / "hospital-state", "https", QIXIN_CONNECTOR_OUTBOX_DIR=str(his_dir)
    )
    pulled = _cli(hospital_env, "hospital", "pull")
    assert any(h["task_id"] == delivery["task_id"] for h in pulled["handed"])
    ref = (his_dir / f"{delivery['task_id']}.hl7").read_text(encoding="utf-8")
    assert (
        _delivery_status(hub, school, referral_id, camhs)[0] == "requested"
    )  # handing over is not acknowledging

    port = _free_port()
    listener = subprocess.Popen(
        [sys.executable, "-m", "hub", "connector", "hospital", "listen", "--port", str(port)],
        env=hospital_env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with __import__("socket").create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert listener.poll() is None, listener.stderr.read() if listener.stderr else ""
                time.sleep(0.3)
        ack = str(hl7.parse(ref).create_ack("AA", application="HIS", facility="SJMHC"))
        reply = asyncio.run(_mllp(port, ack))
        assert "MSA|AA|" in reply, reply
        assert _delivery_status(hub, school, referral_id, camhs)[0] == "received"

        rri = "\r".join(
            [
                "MSH|^~\\&|HIS|SJMHC|QIXIN|HUB|20261130160000+0800||RRI^I12^RRI_I12|SJMHC-RT-2|P|2.5",
                f"RF1|A^Accepted^HL70283|A^^HL70280||||{delivery['task_id']}^QIXIN|20261203",
            ]
        )
        assert "MSA|AA|" in asyncio.run(_mllp(port, rri))
        assert _delivery_status(hub, school, referral_id, camhs) == ("accepted", "appointment-booked")
        # The HIS resends the same ACK (no answer seen, say): acknowledged again, applied once.
        assert "MSA|AA|" in asyncio.run(_mllp(port, ack))
        with hub.client(school) as client:
            timeline = client.get(f"/v1/referrals/{referral_id}").json()["timeline"]
        moves = [e["to_status"] for e in timeline if e["task_id"] == delivery["task_id"] and e["to_status"]]
        assert moves == ["requested", "received", "accepted"]
    finally:
        listener.send_signal(signal.SIGTERM)
        try:
            listener.wait(timeout=20)
        except subprocess.TimeoutExpired:
            listener.kill()
