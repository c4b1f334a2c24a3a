"""End-to-end pipeline benchmark: HTTP -> Kafka -> workers -> read model, beside two baselines.

Run: .venv/bin/python bench/bench_pipeline.py [--n N] [--rate R] [--workers W] [--api-workers A]

Uses the broker and database named by KAFKA_BOOTSTRAP / HUB_DATABASE_URL (an admin URL: a fresh
database is created on that server); without them it starts a local broker and a throwaway
PostgreSQL the way the tests do (tests/support/servers.py) and stops them afterwards.

In one run:
  validate    baseline: fhir.resources R4B ``Bundle.model_validate`` over the sample, one core
  kafka       baseline: raw aiokafka produce -> consume of records the size of the sealed intake
              record (same producer settings as the API), on a fresh topic
  hub         A API processes (``hub api``, round-robin) and W workers (``hub worker``), a fresh
              topic prefix and a fresh database; bodies signed before the clock starts
  open-loop   ``--rate`` referrals/s for ``--duration`` s, sent on schedule whatever the replies
              (latency from the *scheduled* send time, so a stall is not hidden)
  sweep       with ``--sweep 25,50,...``: the open loop again at each rate, lowest first, for
              ``--sweep-seconds`` each; reports the highest rate up to which p99 stays in the target
  max         ``--n`` referrals with ``--concurrency`` POSTs in flight
How "visible" is measured: a separate probe process LISTENs on the read model's delivery channel
(the routing step's transaction NOTIFYs when it commits new deliveries) and then queries the read
model for new ``timeline`` rows of kind ``delivered`` (written in the same transaction as the
delivery row, so a row is visible to the recipient's inbox exactly when it is visible to the
probe); it also re-reads every ``--poll-ms`` in case. It stamps each row with its own wall clock;
latency = that stamp - the POST's start, overstated by the wake-up and one query (about 1 ms).
``--poll-only`` polls every ``--poll-ms`` instead (the earlier method: a 5 ms poll cost about
0.1 core, 200 queries/s, on this 2-core machine). The probe and its database backend count as
"bench" in the CPU figures, not as the hub's.
Throughput of the max phase: referrals visible / (last visible - first POST); "steady" counts the
middle 80 % (10th to 90th percentile of visibility times) to leave out ramp-up and drain.
Writes bench/results/pipeline.json; ``--profile DIR`` also samples every hub process with py-spy
during the max phase (``--profile-phase open``: the open loop instead) and writes
DIR/<process>.txt (collapsed stacks; see bench/profile_summary.py).
The bare validate loop runs again after the hub's phases (the machine's speed drifts); the ratios
use the mean of the two runs, and both are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
SAMPLES = ROOT / "schemas" / "samples"
DEFAULT_SAMPLE = "referral-school-camhs-high"
TARGET_RATE = 1000.0  # referrals/s sustained
TARGET_VALIDATE_RATIO = 0.5  # or >= half the single-core validate rate
TARGET_P99_MS = 100.0  # POST -> inbox at 100 referrals/s
# A routing worker and a downstream one (README "Worker roles"): on two cores, lower p99 at 100/s
# and less CPU per referral than two workers running every step (bench/README.md, round 7).
DEFAULT_ROLES = ("routing", "downstream")


# ------------------------------------------------------------------------------------------------
# small helpers


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(seconds: list[float]) -> dict[str, float | None]:
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50": pct(ms, 0.50),
        "p95": pct(ms, 0.95),
        "p99": pct(ms, 0.99),
        "max": max(ms) if ms else None,
        "mean": statistics.fmean(ms) if ms else None,
    }


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    return inodes


def side_processes(db_name: str, broker_port: int | None) -> dict[str, int]:
    """The broker listening on our port (shared with anything else using it) and our database's backends."""
    found: dict[str, int] = {}
    sockets = {f"socket:[{i}]" for i in listening_inodes(broker_port)} if broker_port else set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "kafka.Kafka" in cmd and sockets:
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) in sockets for fd in (proc / "fd").iterdir()):
                    found[f"broker-{proc.name}"] = int(proc.name)
        elif cmd.startswith("postgres:") and f" {db_name} " in cmd:
            found[f"postgres-{proc.name}"] = int(proc.name)
    return found


class CpuMeter:
    """CPU used by each hub process, by this client, and by everything else, over one phase.

    Wall-clock figures on a shared 2-core machine move with whatever else runs; CPU time per
    referral does not (much), so every phase reports both.
    """

    def __init__(self, pids: dict[str, int], db_name: str, broker_port: int | None) -> None:
        self.db_name, self.broker_port = db_name, broker_port
        self.pids = {**pids, "bench-client": os.getpid()}
        self.pids.update(self._side())
        self.t0 = time.monotonic()
        self.busy0 = machine_busy_seconds()
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.load0 = os.getloadavg()[0]

    def _side(self) -> dict[str, int]:
        # The broker and the hub's backends; the poller's backend is already counted as "bench".
        ours = {pid for name, pid in self.pids.items() if name.startswith("bench")}
        return {n: p for n, p in side_processes(self.db_name, self.broker_port).items() if p not in ours}

    def stop(self, referrals: int) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        self.pids.update(self._side())  # backends opened during the phase count whole
        used = {name: cpu_seconds(pid) - self.start.get(name, 0.0) for name, pid in self.pids.items()}
        busy = machine_busy_seconds() - self.busy0
        ours = sum(used.values())
        per = max(referrals, 1)
        groups: dict[str, float] = {}
        for name, sec in used.items():
            groups[name.split("-")[0]] = groups.get(name.split("-")[0], 0.0) + sec
        return {
            "wall_s": wall,
            "cpu_s": used,
            "cpu_ms_per_referral": {g: 1000 * sec / per for g, sec in groups.items()},
            "hub_cpu_ms_per_referral": 1000
            * sum(v for g, v in groups.items() if g in ("api", "worker"))
            / per,
            "system_cpu_ms_per_referral": 1000
            * sum(v for g, v in groups.items() if g in ("api", "worker", "postgres", "broker"))
            / per,
            # What the machine could sustain if the hub, its database and broker had every core:
            # the figure that does not move with other tenants' load.
            "capacity_if_alone_per_s": (os.cpu_count() or 1)
            * 1000
            / max(1e-9, 1000 * sum(v for g, v in groups.items() if g != "bench") / per),
            "machine_busy_cores": busy / wall if wall else None,
            "other_busy_cores": (busy - ours) / wall if wall else None,  # other tenants, kernel
            "loadavg_1m": [self.load0, os.getloadavg()[0]],
        }


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str]]:
    """(kafka bootstrap, PostgreSQL admin URL): from the environment, else started here like the tests."""
    from tests.support.servers import kafka_bootstrap, postgres_url

    with kafka_bootstrap() as bootstrap, postgres_url() as pg:
        yield bootstrap, pg


# ------------------------------------------------------------------------------------------------
# baseline 1: bare fhir.resources validation on one core


_BARE_LOOP = """
import json, sys, time
from fhir.resources.R4B.bundle import Bundle
sample, seconds = json.loads(sys.stdin.read()), float(sys.argv[1])
Bundle.model_validate(sample)  # warm caches
n, t0 = 0, time.perf_counter()
while (elapsed := time.perf_counter() - t0) < seconds:
    Bundle.model_validate(sample)
    n += 1
print(json.dumps({"rate": n / elapsed, "n": n}))
"""


def bare_validate(sample: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The bare library's validate loop in a process of its own: {"rate": per s, "n": calls}."""
    bare = subprocess.run(
        [sys.executable, "-c", _BARE_LOOP, str(seconds)],
        input=json.dumps(sample),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(bare.stdout)
    return result


def baseline_validate(sample: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The bare library in a process of its own (nothing of Qixin imported), then the hub's calls."""
    from fhir.resources.R4B.bundle import Bundle

    from schemas.profile import validate_referral  # applies the hub's type-lookup fix (profile.py)

    fhir = bare_validate(sample, seconds)

    def rate(fn: Any) -> tuple[float, int]:
        fn()  # warm caches
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            fn()
            n += 1
        return n / elapsed, n

    hub_fhir_rate, hub_fhir_n = rate(lambda: Bundle.model_validate(sample))
    edge_rate, edge_n = rate(lambda: validate_referral(sample))
    return {
        "fhir_per_s": fhir["rate"],
        "fhir_us": 1e6 / fhir["rate"],
        "fhir_calls": fhir["n"],
        "hub_fhir_per_s": hub_fhir_rate,
        "hub_fhir_us": 1e6 / hub_fhir_rate,
        "hub_fhir_calls": hub_fhir_n,
        "edge_validate_per_s": edge_rate,
        "edge_validate_us": 1e6 / edge_rate,
        "edge_validate_calls": edge_n,
        "seconds": seconds,
    }


# ------------------------------------------------------------------------------------------------
# baseline 2: raw aiokafka produce -> consume


async def baseline_kafka(
    bootstrap: str,
    size: int,
    n: int,
    rate: float,
    duration: float,
    partitions: int,
    linger_ms: int,
    batch_size: int,
) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="qixin-bench")
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=batch_size,
        request_timeout_ms=15_000,
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
        enable_auto_commit=True,
        fetch_max_wait_ms=5,
    )
    await producer.start()
    await consumer.start()
    received: dict[int, float] = {}
    try:
        # Wait for the assignment, then prove the path with one record before the clock starts.
        for _ in range(600):  # up to 30 s
            if consumer.assignment():
                break
            await asyncio.sleep(0.05)
        await consumer.seek_to_end()
        pad = b"x" * max(0, size - 16)

        def record(i: int, t: float) -> bytes:
            return i.to_bytes(8, "big") + int(t * 1e6).to_bytes(8, "big") + pad

        async def consume(expected: set[int]) -> None:
            end = time.monotonic() + 120
            while expected - received.keys() and time.monotonic() < end:
                batch = await consumer.getmany(timeout_ms=50)
                now = time.time()
                for records in batch.values():
                    for r in records:
                        received[int.from_bytes(r.value[:8], "big")] = now

        async def send_at_rate(first: int, count: int) -> dict[int, float]:
            sent: dict[int, float] = {}
            pending = []
            t0 = time.monotonic() + 0.05
            w0 = time.time() + 0.05
            for k in range(count):
                delay = t0 + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                i = first + k
                sent[i] = w0 + k / rate
                pending.append(await producer.send(topic, record(i, sent[i]), key=str(i).encode()))
            await asyncio.gather(*pending)
            return sent

        warm = await send_at_rate(10**9, 20)
        await consume(set(warm))
        received.clear()

        # Latency at the open-loop phase's rate.
        n_rate = int(rate * duration)
        consumer_task = asyncio.create_task(consume(set(range(n_rate))))
        sent = await send_at_rate(0, n_rate)
        await consumer_task
        lat = [received[i] - sent[i] for i in sent if i in received]

        # Throughput: produce n as fast as the producer takes them, until all are consumed.
        received.clear()
        first = 10**6
        consumer_task = asyncio.create_task(consume(set(range(first, first + n))))
        t_start = time.time()
        pending = []
        for i in range(first, first + n):
            pending.append(await producer.send(topic, record(i, time.time()), key=str(i).encode()))
        await asyncio.gather(*pending)
        t_acked = time.time()
        await consumer_task
        t_last = max(received.values()) if received else time.time()
        return {
            "topic": topic,
            "record_bytes": size,
            "latency_at_rate_ms": summary_ms(lat),
            "latency_rate_per_s": rate,
            "n": n,
            "consumed": len(received),
            "produce_acked_per_s": n / (t_acked - t_start),
            "produce_consume_per_s": len(received) / (t_last - t_start),
        }
    finally:
        await consumer.stop()
        await producer.stop()
        with contextlib.suppress(Exception):
            admin.delete_topics([topic])
        admin.close()


# ------------------------------------------------------------------------------------------------
# the visibility poller (own process, so the client's event loop cannot delay its clock)


def poll_visibility(
    db_url: str, poll_ms: float, stop: Any, out: Any, backend: Any = None, listen: bool = True
) -> None:
    import psycopg

    from hub.adapters.readmodel import DELIVERED_CHANNEL

    seen: dict[str, list[float]] = {}  # referral_id -> stamps of each delivery's first sighting
    low = 0  # every seq <= low has been seen (or given up on)
    above: dict[int, float] = {}  # seen seqs above low -> when
    queries = 0
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        cur = conn.cursor()
        if backend is not None:  # so that its queries count as the benchmark's, not the hub's
            backend.value = conn.info.backend_pid
        if listen:  # the routing step's commit notifies; --poll-ms is then only the fallback
            conn.execute(f"LISTEN {DELIVERED_CHANNEL}")
        while True:
            stopping = stop.is_set()
            cur.execute(
                "SELECT seq, referral_id FROM timeline WHERE seq > %s AND kind = 'delivered' ORDER BY seq",
                (low,),
            )
            rows = cur.fetchall()
            now = time.time()
            queries += 1
            for seq, referral_id in rows:
                if seq in above:
                    continue
                above[seq] = now
                seen.setdefault(referral_id, []).append(now)
            # Advance past contiguous seqs; a gap older than 2 s is a rolled-back or non-delivery
            # row (other timeline kinds share the sequence), not a commit still on its way.
            while above:
                nxt = low + 1
                if nxt in above:
                    del above[nxt]
                    low = nxt
                    continue
                oldest = min(above)
                if now - above[oldest] > 2.0:
                    low = oldest - 1
                    continue
                break
            if stopping:
                break
            if listen:  # until the next commit with deliveries (one queued meanwhile returns at once)
                for _ in conn.notifies(timeout=poll_ms / 1000, stop_after=1):
                    pass
            else:
                time.sleep(poll_ms / 1000)
    out.send({"seen": seen, "queries": queries})
    out.close()


# ------------------------------------------------------------------------------------------------
# the hub under test


@dataclass
class Hub:
    env: dict[str, str]
    var_dir: Path
    prefix: str
    db_url: str
    ports: list[int]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> None:
        log = (self.var_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "hub", *args],
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def log(self, name: str) -> str:
        path = self.var_dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")


def settings_for(env: dict[str, str]) -> Any:
    from hub.settings import KafkaSettings, Settings

    return Settings(
        var_dir=Path(env["HUB_VAR_DIR"]),
        database_url=env["HUB_DATABASE_URL"],
        kafka=KafkaSettings(
            bootstrap=env["HUB_KAFKA__BOOTSTRAP"],
            topic_prefix=env["HUB_KAFKA__TOPIC_PREFIX"],
            partitions=int(env["HUB_KAFKA__PARTITIONS"]),
        ),
    )


def prepare_hub(args: argparse.Namespace, bootstrap: str, pg_admin: str, var_dir: Path) -> Hub:
    from tests.support.servers import fresh_database

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    db_url = fresh_database(pg_admin, prefix.rstrip("."))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_KAFKA__BOOTSTRAP": bootstrap,
        "HUB_KAFKA__TOPIC_PREFIX": prefix,
        "HUB_KAFKA__PARTITIONS": str(args.partitions),
        "HUB_DATABASE_URL": db_url,
        "HUB_VAR_DIR": str(var_dir),
        "HUB_WORKER__LOG_LEVEL": "warn",
        # The per-agency submission limiter protects the hub from a runaway connector (50/s by
        # default); the benchmark measures the pipeline's capacity, so it lifts it.
        "HUB_API__SUBMIT_RATE_PER_S": "1000000",
        "HUB_API__SUBMIT_BURST": "1000000",
        **dict(kv.split("=", 1) for kv in args.hub_env),
    }
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([args.pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ports = [free_port() for _ in range(args.api_workers)]
    return Hub(env=env, var_dir=var_dir, prefix=prefix, db_url=db_url, ports=ports)


@dataclass
class Prepared:
    bodies: list[bytes]
    signatures: list[str]
    orgs: list[str]
    referral_ids: list[str]
    api_keys: dict[str, str]
    intake_record_bytes: int


def prepare_bodies(hub: Hub, samples: list[dict[str, Any]], count: int) -> Prepared:
    """API keys, every organisation's keys, and ``count`` distinct signed bodies, before any clock."""
    from hub.adapters.apikey import ApiKeyStore
    from hub.adapters.kafka import encode
    from hub.adapters.sealing import HubSealing, open_with_directory_keys
    from hub.bootstrap import build_engine
    from hub.services.crypto_port import SignaturePurpose
    from schemas.envelope import ReferralSubmitted
    from schemas.profile import validate_referral

    settings = settings_for(hub.env)
    engine = build_engine(settings)
    # Several API processes starting together on a fresh database race on CREATE TABLE (the
    # loser fails with a duplicate pg_type row); creating every table first avoids it.
    from hub.adapters.directory import SqlDirectoryRepository
    from hub.adapters.user import create_tables as create_user_tables

    create_user_tables(engine)
    SqlDirectoryRepository(engine).create_tables()
    store = open_with_directory_keys(settings)
    keys = ApiKeyStore(engine)
    validated = [validate_referral(s) for s in samples]
    api_keys = {v.sender_org: keys.create(v.sender_org, label="bench") for v in validated}
    signers = {org: store.signer(org) for org in api_keys}

    # The size of what the API puts on referrals.submitted for the first sample (the raw baseline's
    # record size): the same validate -> seal -> envelope steps as SubmitReferral.
    raw0 = json.dumps(samples[0], ensure_ascii=False).encode()
    sealed, key_id = HubSealing(store, True).seal_for_hub(validated[0].referral_id, raw0)
    intake = ReferralSubmitted(
        event_id=str(uuid.uuid4()),
        referral_id=validated[0].referral_id,
        idempotency_key=validated[0].idempotency_key,
        submitted_at=datetime.now(UTC),
        student_pseudonym=validated[0].student_pseudonym,
        facts=validated[0].facts,
        sealed_bundle=sealed,
        bundle_key_id=key_id,
    )
    intake_bytes = len(encode(intake))
    engine.dispose()

    bodies, sigs, orgs, rids = [], [], [], []
    run = uuid.uuid4().hex[:6]
    for i in range(count):
        k = i % len(samples)
        bundle = samples[k]
        org = validated[k].sender_org
        message_id = f"mh-{run}-{i:07d}"
        header = dict(bundle["entry"][0]["resource"], id=message_id)
        copy = dict(bundle, entry=[dict(bundle["entry"][0], resource=header), *bundle["entry"][1:]])
        body = json.dumps(copy, ensure_ascii=False).encode()
        bodies.append(body)
        sigs.append(signers[org].sign(body, purpose=SignaturePurpose.SUBMISSION))
        orgs.append(org)
        rids.append("ref-" + hashlib.sha256(f"{org}:{message_id}".encode()).hexdigest()[:24])
    return Prepared(bodies, sigs, orgs, rids, api_keys, intake_bytes)


def drop_run_state(hub: Hub, pg_admin: str) -> None:
    """Drop the run's database and topics (a benchmark run leaves nothing behind unless --keep)."""
    import sqlalchemy as sa
    from kafka import KafkaAdminClient

    name = hub.db_url.rsplit("/", 1)[1]
    engine = sa.create_engine(pg_admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()
    admin = KafkaAdminClient(bootstrap_servers=hub.env["HUB_KAFKA__BOOTSTRAP"], client_id="qixin-bench")
    try:
        topics = [t for t in admin.list_topics() if t.startswith(hub.prefix)]
        if topics:
            admin.delete_topics(topics)
    finally:
        admin.close()


def start_hub(hub: Hub, roles: list[str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "hub", "topics", "apply"],
        env=hub.env,
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    for i, port in enumerate(hub.ports):
        hub.start(f"api-{i}", "api", extra_env={"HUB_API__PORT": str(port)})
    for i, role in enumerate(roles):  # one worker process per entry: all | routing | downstream
        hub.start(f"worker-{i}", "worker", "--role", role)
    import httpx

    deadline = time.monotonic() + 90
    for port in hub.ports:
        while True:
            hub.check_alive()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("API not healthy within 90 s")
            time.sleep(0.3)


def wait_group_stable(bootstrap: str, group: str, members: int, timeout: float = 90) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="qixin-bench")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            desc = admin.describe_groups([group]).get(group) or {}
            if desc.get("group_state") == "Stable" and len(desc.get("members") or ()) == members:
                return
            time.sleep(0.5)
        raise RuntimeError(f"consumer group {group} not stable with {members} members")
    finally:
        admin.close()


# ------------------------------------------------------------------------------------------------
# the load generator


@dataclass
class Sent:
    index: int
    start: float  # wall clock: scheduled start (open loop) or actual start (max phase)
    end: float = 0.0
    status: int = 0
    referral_id: str = ""


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client over pre-built request bytes.

    On a 2-core machine the load generator competes with the hub for CPU; httpx costs a few
    hundred microseconds of Python per request, this costs a write and a small parse. Only what
    the API answers is supported: a status line, headers and a Content-Length body.
    """

    def __init__(self, port: int, limit: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.slots = asyncio.Semaphore(limit)
        self.all: list[asyncio.StreamWriter] = []

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        async with self.slots:
            try:
                return await self._exchange(raw, reuse=True)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closed a keep-alive connection as we reused it (uvicorn drops idle ones
                # after 5 s): the request never reached it, and submissions are idempotent anyway.
                return await self._exchange(raw, reuse=False)

    async def _exchange(self, raw: bytes, reuse: bool) -> tuple[int, bytes]:
        conn = None
        while reuse and self.idle:
            reader, writer, used = self.idle.pop()
            if time.monotonic() - used < 3.0 and not writer.is_closing():
                conn = reader, writer
                break
            writer.close()
        if conn is None:
            conn = await asyncio.open_connection("127.0.0.1", self.port)
            self.all.append(conn[1])
        reader, writer = conn
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" not in headers:
                raise RuntimeError(f"response without Content-Length: {headers}")
            body = await reader.readexactly(int(headers["content-length"]))
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer, time.monotonic()))
        return status, body

    async def close(self) -> None:
        for w in self.all:
            w.close()


class Client:
    def __init__(self, hub: Hub, prep: Prepared, concurrency: int, kind: str = "raw") -> None:
        self.prep = prep
        self.kind = kind
        self.ports = hub.ports
        self.headers = [
            {
                "Authorization": f"Bearer {prep.api_keys[prep.orgs[i]]}",
                "Content-Type": "application/fhir+json",
                "X-Qixin-Signature": prep.signatures[i],
            }
            for i in range(len(prep.bodies))
        ]
        if kind == "httpx":
            import httpx

            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            self.clients: list[Any] = [
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", timeout=60, limits=limits)
                for p in hub.ports
            ]
        else:
            self.clients = [RawHttp(p, concurrency) for p in hub.ports]
        self.errors: dict[str, int] = {}

    def raw_request(self, i: int) -> bytes:
        port = self.ports[i % len(self.ports)]
        body = self.prep.bodies[i]
        head = ["POST /v1/referrals HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in self.headers[i].items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def post(self, i: int, start: float, raw: bytes | None = None) -> Sent:
        sent = Sent(i, start)
        client = self.clients[i % len(self.clients)]
        try:
            if self.kind == "httpx":
                r = await client.post("/v1/referrals", content=self.prep.bodies[i], headers=self.headers[i])
                status, body = r.status_code, r.content
            else:
                status, body = await asyncio.wait_for(client.request(raw or self.raw_request(i)), 120)
            sent.status = status
            if status == 202:
                sent.referral_id = json.loads(body)["referral_id"]
            else:
                key = f"{status} {body[:160].decode(errors='replace')}"
                self.errors[key] = self.errors.get(key, 0) + 1
        except Exception as exc:  # counted, never fatal: the phase reports its failures
            key = type(exc).__name__
            self.errors[key] = self.errors.get(key, 0) + 1
        sent.end = time.time()
        return sent

    async def open_loop(self, indexes: list[int], rate: float) -> list[Sent]:
        raws = {i: self.raw_request(i) for i in indexes} if self.kind == "raw" else {}
        tasks = []
        t0 = time.monotonic() + 0.1
        w0 = time.time() + 0.1
        for k, i in enumerate(indexes):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.post(i, w0 + k / rate, raws.get(i))))
        return list(await asyncio.gather(*tasks))

    async def closed_loop(self, indexes: list[int], concurrency: int) -> list[Sent]:
        raws = {i: self.raw_request(i) for i in indexes} if self.kind == "raw" else {}
        queue = iter(indexes)
        results: list[Sent] = []

        async def lane() -> None:
            for i in queue:
                results.append(await self.post(i, time.time(), raws.get(i)))

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return results

    async def close(self) -> None:
        for c in self.clients:
            await (c.aclose() if self.kind == "httpx" else c.close())


def wait_visible(poller_conn: Any, stop: Any, proc: Any, timeout: float) -> dict[str, Any]:
    stop.set()
    if not poller_conn.poll(timeout):
        raise RuntimeError("the visibility poller did not answer")
    data: dict[str, Any] = poller_conn.recv()
    proc.join(10)
    return data


def phase_result(
    name: str, sent: list[Sent], seen: dict[str, list[float]], expected_deliveries: dict[str, int]
) -> dict[str, Any]:
    ok = [s for s in sent if s.status == 202]
    accept = [s.end - s.start for s in ok]
    first_vis, all_vis, stamps = [], [], []
    missing = 0
    for s in ok:
        marks = seen.get(s.referral_id)
        want = expected_deliveries.get(s.referral_id, 1)
        if not marks or len(marks) < want:
            missing += 1
            continue
        first_vis.append(min(marks) - s.start)
        last = sorted(marks)[want - 1]
        all_vis.append(last - s.start)
        stamps.append(last)
    t_first = min(s.start for s in sent) if sent else 0.0
    out: dict[str, Any] = {
        "phase": name,
        "posted": len(sent),
        "accepted": len(ok),
        "visible": len(stamps),
        "not_visible": missing,
        "post_202_ms": summary_ms(accept),
        "post_to_first_inbox_ms": summary_ms(first_vis),
        "post_to_inbox_ms": summary_ms(all_vis),
    }
    if stamps:
        stamps.sort()
        span = stamps[-1] - t_first
        out["wall_s"] = span
        out["throughput_per_s"] = len(stamps) / span if span > 0 else None
        lo, hi = pct(stamps, 0.10), pct(stamps, 0.90)
        out["steady_throughput_per_s"] = 0.8 * len(stamps) / (hi - lo) if hi and lo and hi > lo else None
        out["accepted_per_s"] = len(ok) / (max(s.end for s in ok) - t_first) if ok else None
    return out


def expected_deliveries(db_url: str, referral_ids: list[str]) -> dict[str, int]:
    """Deliveries each referral ended with, read once everything has settled."""
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute(
            "SELECT referral_id, count(*) FROM deliveries WHERE referral_id = ANY(%s) GROUP BY referral_id",
            (referral_ids,),
        ).fetchall()
    return {r: int(c) for r, c in rows}


class Poller:
    def __init__(self, db_url: str, poll_ms: float, listen: bool = True) -> None:
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.recv, send = ctx.Pipe(duplex=False)
        self.backend = ctx.Value("i", 0)
        self.proc = ctx.Process(
            target=poll_visibility,
            args=(db_url, poll_ms, self.stop, send, self.backend, listen),
            daemon=True,
        )
        self.proc.start()
        deadline = time.monotonic() + 60  # connected (its backend known) before any meter starts
        while not self.backend.value and self.proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)

    def pids(self) -> dict[str, int]:
        """The poller and its PostgreSQL backend: the benchmark's load, counted as "bench"."""
        found = {"bench-poller": self.proc.pid} if self.proc.pid else {}
        if self.backend.value:
            found["bench-pollerdb"] = self.backend.value
        return found

    def collect(self) -> dict[str, Any]:
        return wait_visible(self.recv, self.stop, self.proc, 60)


async def wait_until_seen(db_url: str, referral_ids: list[str], limit_s: float) -> int:
    """Block until every referral has a delivery (or the timeout); return how many are visible."""
    import psycopg

    want = set(referral_ids)
    deadline = time.monotonic() + limit_s
    async with await psycopg.AsyncConnection.connect(
        db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(DISTINCT referral_id) FROM deliveries WHERE referral_id = ANY(%s)",
                (list(want),),
            )
            row = await cur.fetchone()
            n = int(row[0]) if row else 0
            if n >= len(want) or time.monotonic() > deadline:
                return n
            await asyncio.sleep(0.1)


def start_profilers(hub: Hub, out_dir: Path, rate_hz: int) -> list[subprocess.Popen[bytes]]:
    spy = (
        os.environ.get("PY_SPY")
        or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        or shutil.which("py-spy")
    )
    if spy is None:
        raise RuntimeError(
            "--profile needs py-spy: .venv/bin/uv pip install --python .venv/bin/python py-spy"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, proc in hub.procs.items():
        procs.append(
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--rate",
                    str(rate_hz),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--threads",
                    "-o",
                    str(out_dir / f"{name}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(1.0)  # attached before the phase starts
    return procs


def stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


async def run_phases(
    args: argparse.Namespace, hub: Hub, prep: Prepared, validate_sample: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Warm-up, open loop and max phases. With ``validate_sample`` the bare validate loop also runs
    right before the max phase (the hub idle), so that the ratio's baseline brackets the throughput
    it is compared with: on this machine the loop's rate moves by ± 25 % within seconds."""
    client = Client(hub, prep, max(args.concurrency, 64), args.client)
    results: dict[str, Any] = {}
    try:
        n_warm = args.warmup
        n_open = 0 if args.skip_open else int(args.rate * args.duration)
        sweep: list[tuple[float, int]] = args.sweep_plan  # (rate, referrals) pairs, from main
        n_sweep = sum(count for _, count in sweep)
        warm = list(range(n_warm))
        open_idx = list(range(n_warm, n_warm + n_open))
        max_idx = list(range(n_warm + n_open + n_sweep, n_warm + n_open + n_sweep + args.n))

        say(f"warm-up: {n_warm} referrals")
        pids = {name: p.pid for name, p in hub.procs.items()}
        bootstrap = hub.env["HUB_KAFKA__BOOTSTRAP"].split(",")[0]
        broker_port = (
            int(bootstrap.rsplit(":", 1)[1]) if bootstrap.startswith(("127.", "localhost")) else None
        )
        sent = await client.closed_loop(warm, 8)
        visible = await wait_until_seen(hub.db_url, [s.referral_id for s in sent if s.referral_id], 120)
        if visible < n_warm:
            raise RuntimeError(f"warm-up: only {visible}/{n_warm} visible; errors {client.errors}")
        await asyncio.sleep(1.0)

        async def open_loop(name: str, rate: float, seconds: float, idx: list[int]) -> dict[str, Any]:
            say(f"{name.replace('_', ' ')}: {rate:g}/s for {seconds:g} s ({len(idx)} referrals)")
            poller = Poller(hub.db_url, args.poll_ms, not args.poll_only)
            await asyncio.sleep(1.0)
            profile_open = bool(args.profile) and args.profile_phase == "open" and name == "open_loop"
            profilers = start_profilers(hub, Path(args.profile), args.profile_hz) if profile_open else []
            meter = CpuMeter({**pids, **poller.pids()}, hub.prefix.rstrip("."), broker_port)
            try:
                sent = await client.open_loop(idx, rate)
                await wait_until_seen(
                    hub.db_url, [s.referral_id for s in sent if s.referral_id], 60 + len(idx) / 5
                )
            finally:
                stop_profilers(profilers)
            cpu = meter.stop(len(sent))
            data = poller.collect()
            exp = expected_deliveries(hub.db_url, [s.referral_id for s in sent if s.referral_id])
            out = phase_result(name, sent, data["seen"], exp)
            out.update(rate_per_s=rate, duration_s=seconds, poll_queries=data["queries"], cpu=cpu)
            out["errors"] = dict(client.errors)
            client.errors.clear()
            await asyncio.sleep(1.0)
            return out

        if not args.skip_open:
            results["open_loop"] = await open_loop("open_loop", args.rate, args.duration, open_idx)

        if sweep:
            # The latency target's knee: the same open loop at each rate, lowest first.
            results["sweep"] = []
            start = n_warm + n_open
            for rate, count in sweep:
                idx = list(range(start, start + count))
                start += count
                results["sweep"].append(await open_loop("sweep", rate, args.sweep_seconds, idx))

        if args.n and validate_sample is not None:
            say("baseline: fhir.resources validate loop, right before the max phase")
            results["validate_before_max"] = await asyncio.to_thread(
                bare_validate, validate_sample, args.validate_seconds
            )
        if args.n:
            say(f"max throughput: {args.n} referrals, {args.concurrency} in flight")
            poller = Poller(hub.db_url, args.poll_ms, not args.poll_only)
            await asyncio.sleep(1.0)
            profile_max = bool(args.profile) and args.profile_phase == "max"
            profilers = start_profilers(hub, Path(args.profile), args.profile_hz) if profile_max else []
            meter = CpuMeter({**pids, **poller.pids()}, hub.prefix.rstrip("."), broker_port)
            try:
                sent = await client.closed_loop(max_idx, args.concurrency)
                await wait_until_seen(
                    hub.db_url, [s.referral_id for s in sent if s.referral_id], 60 + args.n / 5
                )
            finally:
                stop_profilers(profilers)
            cpu = meter.stop(len(sent))
            data = poller.collect()
            exp = expected_deliveries(hub.db_url, [s.referral_id for s in sent if s.referral_id])
            results["max"] = phase_result("max", sent, data["seen"], exp)
            results["max"].update(concurrency=args.concurrency, poll_queries=data["queries"], cpu=cpu)
            results["max"]["errors"] = dict(client.errors)
    finally:
        await client.close()
    return results


# ------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="referrals in the max-throughput phase (0: skip)")
    p.add_argument("--rate", type=float, default=100.0, help="open-loop rate, referrals/s")
    p.add_argument("--duration", type=float, default=20.0, help="open-loop seconds")
    p.add_argument(
        "--workers", type=int, default=None, help="W hub worker processes running every step (role all)"
    )
    p.add_argument(
        "--roles",
        default=None,
        help="worker processes by role, one per entry (all | routing | downstream), each role in its "
        f"own consumer group (default, unless --workers is given: {','.join(DEFAULT_ROLES)})",
    )
    p.add_argument("--api-workers", type=int, default=1, help="hub API processes (client round-robins)")
    p.add_argument("--concurrency", type=int, default=64, help="POSTs in flight in the max phase")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw", help="load generator's HTTP client")
    p.add_argument("--partitions", type=int, default=6, help="partitions of the hub's topics")
    p.add_argument("--warmup", type=int, default=100, help="referrals sent before any clock")
    p.add_argument(
        "--poll-ms",
        type=float,
        default=50.0,
        help="the visibility probe re-reads at least this often (it also wakes on each commit's NOTIFY)",
    )
    p.add_argument(
        "--poll-only", action="store_true", help="no LISTEN: re-read every --poll-ms (e.g. --poll-ms 5)"
    )
    p.add_argument("--samples", default=DEFAULT_SAMPLE, help="comma-separated sample names, or 'all'")
    p.add_argument("--validate-seconds", type=float, default=3.0)
    p.add_argument("--kafka-n", type=int, default=20000, help="records in the raw Kafka throughput baseline")
    p.add_argument("--skip-open", action="store_true", help="skip the open-loop phase")
    p.add_argument(
        "--sweep",
        default="",
        help="comma-separated rates, e.g. 25,50,75,100: an open loop at each (after the --rate one), "
        "to find the highest rate at which p99 POST->inbox stays within the target",
    )
    p.add_argument("--sweep-seconds", type=float, default=15.0, help="seconds of each --sweep rate")
    p.add_argument("--skip-baselines", action="store_true")
    p.add_argument("--profile", default="", help="directory: py-spy every hub process during the max phase")
    p.add_argument("--profile-hz", type=int, default=200)
    p.add_argument(
        "--profile-phase", choices=("max", "open"), default="max", help="which phase --profile samples"
    )
    p.add_argument("--hub-env", action="append", default=[], help="extra KEY=VALUE for the hub processes")
    p.add_argument("--pythonpath", default="", help="prepend to PYTHONPATH of the hub processes")
    p.add_argument("--output", default=str(RESULTS / "pipeline.json"))
    p.add_argument("--keep", action="store_true", help="keep the hub's var dir (logs, keys)")
    return p.parse_args()


def parse_rates(spec: str) -> list[float]:
    """``--sweep``'s rates, lowest first; a bad one is refused with its text."""
    rates = []
    for part in (x.strip() for x in spec.split(",") if x.strip()):
        try:
            rate = float(part)
        except ValueError:
            raise SystemExit(
                f"--sweep: {part!r} is not a rate (referrals/s), e.g. --sweep 25,50,100"
            ) from None
        if not 0 < rate <= 10_000:
            raise SystemExit(f"--sweep: {part!r} is outside 0 < rate <= 10000 referrals/s")
        rates.append(rate)
    return sorted(set(rates))


def parse_roles(spec: str | None, workers: int | None) -> list[str]:
    """One role per worker process: ``--workers`` x all, or ``--roles`` (default routing,downstream)."""
    from hub.settings import WORKER_ROLES

    if workers is not None:
        if spec is not None:
            raise SystemExit("give --workers (every step in each) or --roles, not both")
        if workers < 1:
            raise SystemExit(f"--workers: {workers} is not a number of processes; give 1 or more")
        return ["all"] * workers
    if spec is None:
        return list(DEFAULT_ROLES)
    roles = [x.strip() for x in spec.split(",") if x.strip()]
    for role in roles:
        if role not in WORKER_ROLES:
            raise SystemExit(f"--roles: {role!r} is not a worker role; use {', '.join(WORKER_ROLES)}")
    if "all" not in roles and not {"routing", "downstream"} <= set(roles):
        raise SystemExit("--roles: name both routing and downstream (or all): every step needs a worker")
    return roles


def sweep_knee(sweep: list[dict[str, Any]]) -> float | None:
    """The highest swept rate up to which every rate kept p99 POST->inbox within the target."""
    best = None
    for phase in sorted(sweep, key=lambda x: x["rate_per_s"]):
        p99 = phase["post_to_inbox_ms"]["p99"]
        if p99 is None or p99 > TARGET_P99_MS or phase["not_visible"]:
            break
        best = phase["rate_per_s"]
    return best


def load_samples(spec: str) -> list[dict[str, Any]]:
    names = sorted(p.stem for p in SAMPLES.glob("referral-*.json")) if spec == "all" else spec.split(",")
    return [
        json.loads((SAMPLES / f"{n.removesuffix('.json')}.json").read_text(encoding="utf-8")) for n in names
    ]


def print_table(res: dict[str, Any]) -> None:
    b, k = res.get("baselines", {}).get("validate"), res.get("baselines", {}).get("kafka")
    o, m, r = res["phases"].get("open_loop"), res["phases"].get("max"), res["ratios"]
    rows: list[tuple[str, str, str]] = []
    if b:
        drift = (
            f" (before max {b['fhir_per_s_before']:.0f}, after {b['fhir_per_s_after']:.0f};"
            f" at the start {b.get('fhir_per_s_start', b['fhir_per_s_before']):.0f})"
            if "fhir_per_s_after" in b
            else ""
        )
        rows.append(
            (
                "fhir.resources Bundle.model_validate, 1 core (bare, own process)",
                f"{b['fhir_per_s']:.0f}/s",
                f"{b['fhir_us']:.0f} us each{drift}",
            )
        )
        if "hub_fhir_per_s" in b:
            rows.append(
                (
                    "fhir.resources as the hub calls it (type lookup fixed)",
                    f"{b['hub_fhir_per_s']:.0f}/s",
                    f"{b['hub_fhir_us']:.0f} us each",
                )
            )
        rows.append(
            (
                "edge validate (fhir + Qixin profile), 1 core",
                f"{b['edge_validate_per_s']:.0f}/s",
                f"{b['edge_validate_us']:.0f} us each",
            )
        )
    if k:
        lat = k["latency_at_rate_ms"]
        rows.append(
            (
                f"raw aiokafka produce->consume, {k['record_bytes']} B",
                f"{k['produce_consume_per_s']:.0f}/s",
                f"at {k['latency_rate_per_s']:g}/s p50 {fmt(lat['p50'])} p99 {fmt(lat['p99'])} ms",
            )
        )
    if o:
        lat = o["post_to_inbox_ms"]
        rows.append(
            (
                f"hub open loop {o['rate_per_s']:g}/s: POST -> inbox",
                f"{o['visible']}/{o['posted']} visible",
                f"p50 {fmt(lat['p50'])} p95 {fmt(lat['p95'])} p99 {fmt(lat['p99'])} ms",
            )
        )
        a = o["post_202_ms"]
        rows.append(
            (
                "hub open loop: POST -> 202",
                "",
                f"p50 {fmt(a['p50'])} p95 {fmt(a['p95'])} p99 {fmt(a['p99'])} ms",
            )
        )
    if m:
        lat = m["post_to_inbox_ms"]
        rows.append(
            (
                f"hub max ({m['concurrency']} in flight): sustained",
                f"{fmt(m.get('throughput_per_s'), '.0f')}/s",
                f"steady {fmt(m.get('steady_throughput_per_s'), '.0f')}/s; "
                f"accepted {fmt(m.get('accepted_per_s'), '.0f')}/s",
            )
        )
        rows.append(
            (
                "hub max: POST -> inbox",
                f"{m['visible']}/{m['posted']} visible",
                f"p50 {fmt(lat['p50'])} p95 {fmt(lat['p95'])} p99 {fmt(lat['p99'])} ms",
            )
        )
    for ph in (o, m):
        if ph and ph.get("cpu"):
            c = ph["cpu"]
            parts = ", ".join(f"{g} {v:.2f}" for g, v in sorted(c["cpu_ms_per_referral"].items()))
            rows.append(
                (f"  CPU ms per referral ({ph['phase']})", f"{c['hub_cpu_ms_per_referral']:.2f} hub", parts)
            )
            rows.append(
                (
                    f"  capacity if the machine were the hub's ({ph['phase']})",
                    f"{c['capacity_if_alone_per_s']:.0f}/s",
                    f"{os.cpu_count()} cores / {c['system_cpu_ms_per_referral']:.1f} ms CPU per referral "
                    "(hub + PostgreSQL + broker)",
                )
            )
            rows.append(
                (
                    f"  machine busy / others ({ph['phase']})",
                    f"{fmt(c['machine_busy_cores'], '.2f')} cores",
                    f"others {fmt(c['other_busy_cores'], '.2f')} cores; "
                    f"load {c['loadavg_1m'][0]:.1f}->{c['loadavg_1m'][1]:.1f}",
                )
            )
    w = max(len(x[0]) for x in rows) if rows else 10
    print()
    for a_, b_, c_ in rows:
        print(f"  {a_:<{w}}  {b_:>18}  {c_}")
    print()
    sweep = res["phases"].get("sweep")
    if sweep:
        print(
            f"  sweep ({sweep[0]['duration_s']:g} s each)   POST -> inbox p50 / p95 / p99 ms"
            "   POST -> 202 p99   CPU ms/referral (hub+PG+broker)   machine busy"
        )
        for ph in sweep:
            lat, c = ph["post_to_inbox_ms"], ph.get("cpu") or {}
            print(
                f"  {ph['rate_per_s']:>8g}/s {ph['visible']:>6}/{ph['posted']:<6}"
                f"  {fmt(lat['p50']):>7} / {fmt(lat['p95']):>7} / {fmt(lat['p99']):>7}"
                f"   {fmt(ph['post_202_ms']['p99']):>15}"
                f"   {fmt(c.get('system_cpu_ms_per_referral'), '.1f'):>31}"
                f"   {fmt(c.get('machine_busy_cores'), '.2f'):>12}"
            )
        knee = res["targets"].get("p99_met_up_to_rate")
        print(
            f"  p99 POST->inbox <= {TARGET_P99_MS:.0f} ms up to: "
            + (f"{knee:g}/s (of the rates swept)" if knee else "none of the rates swept")
        )
        print()
    for name, value in r.items():
        print(f"  {name:<44} {fmt(value, '.3f')}")
    t = res["targets"]
    print()
    print(
        f"  target throughput >= {TARGET_RATE:.0f}/s or >= {TARGET_VALIDATE_RATIO} x validate rate: "
        + (("MET" if t.get("throughput_met") else "not met") if m else "not measured (no max phase)")
    )
    print(
        f"  target p99 POST->inbox <= {TARGET_P99_MS:.0f} ms at {res['settings']['rate']:g}/s: "
        + (("MET" if t.get("p99_met") else "not met") if o else "not measured (no open loop at --rate)")
    )
    print()


def main() -> int:
    args = parse_args()
    samples = load_samples(args.samples)
    rates = parse_rates(args.sweep)  # refused here, before any server starts
    if rates and args.sweep_seconds <= 0:
        raise SystemExit(f"--sweep-seconds: {args.sweep_seconds:g} is not a duration; give seconds > 0")
    args.sweep_plan = [(rate, int(rate * args.sweep_seconds)) for rate in rates]
    args.worker_roles = parse_roles(args.roles, args.workers)
    count = (
        args.warmup
        + int(args.rate * args.duration) * (not args.skip_open)
        + sum(n for _, n in args.sweep_plan)
        + args.n
    )
    var_dir = Path(tempfile.mkdtemp(prefix="qixin-bench-"))
    result: dict[str, Any] = {
        "benchmark": "pipeline: HTTP -> Kafka -> workers -> read model, beside raw Kafka and validation",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_before": os.getloadavg(),
        },
        "settings": {
            k: getattr(args, k)
            for k in (
                "n",
                "rate",
                "duration",
                "workers",
                "worker_roles",
                "api_workers",
                "concurrency",
                "partitions",
                "warmup",
                "poll_ms",
                "poll_only",
                "sweep",
                "sweep_seconds",
                "samples",
                "hub_env",
                "pythonpath",
                "client",
            )
        },
        "baselines": {},
        "phases": {},
    }
    hub: Hub | None = None
    ok = False
    with servers() as (bootstrap, pg_admin):
        try:
            say(f"broker {bootstrap}; database server {pg_admin.rsplit('@', 1)[-1]}")
            hub = prepare_hub(args, bootstrap, pg_admin, var_dir)
            say(f"signing {count} bodies ({len(samples)} sample(s))")
            prep = prepare_bodies(hub, samples, count)
            result["intake_record_bytes"] = prep.intake_record_bytes
            result["body_bytes"] = len(prep.bodies[0])
            if not args.skip_baselines:
                say("baseline: fhir.resources validate loop, one core")
                result["baselines"]["validate"] = baseline_validate(samples[0], args.validate_seconds)
                say(f"baseline: raw aiokafka, {prep.intake_record_bytes} B records")
                result["baselines"]["kafka"] = asyncio.run(
                    baseline_kafka(
                        bootstrap,
                        prep.intake_record_bytes,
                        args.kafka_n,
                        args.rate,
                        5.0,
                        args.partitions,
                        int(hub.env.get("HUB_KAFKA__LINGER_MS", "5")),
                        int(hub.env.get("HUB_KAFKA__BATCH_SIZE", "262144")),
                    )
                )
            say(f"starting the hub: {args.api_workers} API, workers: {', '.join(args.worker_roles)}")
            start_hub(hub, args.worker_roles)
            for role in sorted(set(args.worker_roles)):  # each role is a consumer group of its own
                group = "qixin-hub-" + ("" if role == "all" else f"{role}-") + hub.prefix.strip(".")
                wait_group_stable(bootstrap, group, args.worker_roles.count(role))
            bracket = None if args.skip_baselines else samples[0]
            result["phases"] = asyncio.run(run_phases(args, hub, prep, bracket))
            hub.check_alive()
            ok = True
        finally:
            if hub is not None:
                hub.stop_all()
                if not ok:
                    for name in hub.procs:
                        print(f"--- {name} log ---\n{hub.log(name)}", file=sys.stderr)
            if ok and not args.keep:
                shutil.rmtree(var_dir, ignore_errors=True)
                if hub is not None:
                    try:
                        drop_run_state(hub, pg_admin)
                    except Exception as exc:  # leftovers are harmless; say so and go on
                        print(f"could not drop the run's database/topics: {exc}", file=sys.stderr)
            else:
                print(f"hub var dir, database and topics kept: {var_dir}", file=sys.stderr)

    v = result["baselines"].get("validate")
    if v and ok:
        # This machine's speed drifts by up to ± 25 % within seconds (bench/README.md): the bare loop
        # also runs right before the max phase and after it, and the ratios use the mean of those two.
        say("baseline: fhir.resources validate loop again, after the hub")
        after = bare_validate(samples[0], args.validate_seconds)
        before_max = result["phases"].pop("validate_before_max", None)
        v["fhir_per_s_start"] = v["fhir_per_s"]  # the first loop, before the hub started
        v["fhir_per_s_before"] = before_max["rate"] if before_max else v["fhir_per_s"]
        v["fhir_per_s_after"] = after["rate"]
        v["fhir_per_s"] = (v["fhir_per_s_before"] + after["rate"]) / 2
        v["fhir_us"] = 1e6 / v["fhir_per_s"]
    k = result["baselines"].get("kafka")
    o = result["phases"].get("open_loop")
    m = result["phases"].get("max")
    thr = m.get("throughput_per_s") if m else None
    ratios: dict[str, float | None] = {}
    if thr and v:
        ratios["hub throughput / validate rate (1 core)"] = thr / v["fhir_per_s"]
        ratios["hub throughput / edge validate rate (1 core)"] = thr / v["edge_validate_per_s"]
    if thr and k:
        ratios["hub throughput / raw kafka throughput"] = thr / k["produce_consume_per_s"]
    if o and k and o["post_to_inbox_ms"]["p99"] and k["latency_at_rate_ms"]["p99"]:
        ratios["hub p99 / raw kafka p99 (same rate)"] = (
            o["post_to_inbox_ms"]["p99"] / k["latency_at_rate_ms"]["p99"]
        )
    if thr:
        ratios["hub throughput / 1000 target"] = thr / TARGET_RATE
    cap = m.get("cpu", {}).get("capacity_if_alone_per_s") if m else None
    if cap and v:
        ratios["capacity if alone / validate rate (1 core)"] = cap / v["fhir_per_s"]
    result["ratios"] = ratios
    result["targets"] = {
        "throughput_met": bool(
            thr and (thr >= TARGET_RATE or (v and thr >= TARGET_VALIDATE_RATIO * v["fhir_per_s"]))
        ),
        "p99_met": bool(
            o and o["post_to_inbox_ms"]["p99"] is not None and o["post_to_inbox_ms"]["p99"] <= TARGET_P99_MS
        ),
    }
    if result["phases"].get("sweep"):
        result["targets"]["p99_met_up_to_rate"] = sweep_knee(result["phases"]["sweep"])
    result["machine"]["loadavg_after"] = os.getloadavg()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print_table(result)
    say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
