"""Fault-test helpers: private Kafka brokers, a steady signed submission load, and the exactly-once check."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tests.support.hub import SAMPLES, RunningHub, with_new_message_id
from tests.support.servers import KAFKA_SH, REPO

# Samples whose recipients all get a delivery (no consent refusal), two of them with two recipients.
LOAD_SAMPLES = (
    "referral-school-police-mandatory-report.json",  # police + civil affairs (statutory)
    "referral-police-case-support-district-centre.json",  # district centre + street centre
    "referral-school-camhs-high.json",  # one hospital (green channel)
)

# Worker settings read by faust from the environment (faust's own names, not HUB_*): a member that
# died is evicted from the consumer group after 10 s instead of 60 s, so the tests wait less for the
# rebalance that hands its partitions to the survivor.
FAST_GROUP_ENV = {
    "BROKER_SESSION_TIMEOUT": "10",
    "BROKER_HEARTBEAT_INTERVAL": "1",
    "BROKER_REBALANCE_TIMEOUT": "20",
}


# --------------------------------------------------------------------------------------------------
# Private brokers


def _ports_free(ports: list[int]) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_block(brokers: int) -> int:
    """A client port P with P..P+n-1 and the controller ports P+1000.. all free."""
    for _ in range(200):
        base = random.randrange(41000, 48000)
        ports = [base + i for i in range(brokers)] + [base + 1000 + i for i in range(brokers)]
        if _ports_free(ports):
            return base
    raise RuntimeError("no free block of ports for a private Kafka")


@dataclass
class PrivateKafka:
    """A Kafka of our own (own data, run and log files; the jars are shared), so we may stop it."""

    brokers: int
    cache: Path
    port: int
    bootstrap: str = ""

    def _env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "QIXIN_CACHE": str(self.cache),
            "KAFKA_PORT": str(self.port),
            "KAFKA_HEAP": os.environ.get("QIXIN_FAULT_KAFKA_HEAP", "-Xms128m -Xmx384m"),
            "KAFKA_STOP_TIMEOUT": "30",
            **extra,
        }

    def sh(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            ["bash", str(KAFKA_SH), *args, "--brokers", str(self.brokers)],
            env=self._env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"kafka.sh {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
            )
        return done.stdout.strip()

    def start(self) -> str:
        self.bootstrap = self.sh("start").splitlines()[-1]
        return self.bootstrap

    def stop(self, grace_s: int = 30) -> None:
        self.sh("stop", env={"KAFKA_STOP_TIMEOUT": str(grace_s)})

    def start_node(self, node: int) -> None:
        self.sh("start", "--node", str(node))

    def kill_node(self, node: int) -> None:
        """SIGKILL one broker JVM (a crash: no controlled shutdown, no leadership hand-over)."""
        mode = "cluster3" if self.brokers == 3 else "single"
        run = self.cache / "run"
        pid = int((run / f"kafka-{mode}-node{node}.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        # Only the JVM this fixture started: its command line names our private properties file.
        assert str(run / f"kafka-{mode}-node{node}.properties") in cmdline, cmdline
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


@contextmanager
def private_kafka(brokers: int) -> Iterator[PrivateKafka]:
    """Start a private single node or 3-node cluster; stop it and delete its data afterwards."""
    shared = Path(os.environ.get("QIXIN_CACHE", REPO / ".cache")).resolve()
    shared.joinpath("kafka").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"qixin-kafka{brokers}-") as tmp:
        cache = Path(tmp)
        # Jars shared (and fetched there once); data, pid, state and logs private to this broker.
        (cache / "kafka").symlink_to(shared / "kafka", target_is_directory=True)
        kafka = PrivateKafka(brokers, cache, free_port_block(brokers))
        try:
            kafka.start()
            yield kafka
        finally:
            # Its data is thrown away: no need for a long clean shutdown.
            with contextlib.suppress(Exception):  # a failure to stop must not hide the test's own
                kafka.stop(grace_s=5)


def partition_leaders(bootstrap: str, topics: list[str]) -> Counter[int]:
    """How many partitions of ``topics`` each broker leads."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="qixin-faults", request_timeout_ms=10_000)
    try:
        described = admin.describe_topics(topics)
    finally:
        admin.close()
    return Counter(p["leader_id"] for t in described for p in t["partitions"] if p["leader_id"] >= 0)


def topic_census(
    bootstrap: str, topic: str, id_field: str, referral_ids: set[str], timeout: float = 30
) -> Counter[str]:
    """Records of these referrals on ``topic`` per ``id_field``: above 1, a step re-sent after a fault."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="qixin-census", group_id=None
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        seen: Counter[str] = Counter()
        deadline = time.monotonic() + timeout
        while any(consumer.position(p) < ends[p] for p in parts) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    value = json.loads(record.value)
                    if value.get("referral_id") in referral_ids:
                        seen[value[id_field]] += 1
        return seen
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------------------
# Expected recipients


def _sender_of(bundle: dict[str, Any]) -> str:
    resources = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    header = bundle["entry"][0]["resource"]
    org = resources[header["sender"]["reference"]]
    return str(org["identifier"][0]["value"])


def routed_recipients(bundle: dict[str, Any]) -> frozenset[str]:
    """Who the district's rules send this referral to now (the dry run of `hub rules explain`)."""
    from hub.adapters.directory import load_directory
    from hub.adapters.rules import facts_from_document, load_ruleset
    from hub.adapters.workcalendar import ChinaWorkCalendar
    from hub.domain.routing import decide
    from hub.settings import RulesSettings

    rules = RulesSettings()
    directory = load_directory(rules.directory_file)
    facts = facts_from_document(
        bundle,
        directory=directory,
        calendar=ChinaWorkCalendar.from_file(rules.calendar_file),
        now=datetime.now(UTC),
    )
    decision = decide(facts, load_ruleset(rules.dir, directory), directory)
    return frozenset(r.recipient for r in decision.routes)


@dataclass(frozen=True)
class Kind:
    """One sample used as a template: who sends it and who must receive each copy."""

    name: str
    bundle: dict[str, Any]
    sender: str
    recipients: frozenset[str]


def load_kinds(names: tuple[str, ...] = LOAD_SAMPLES) -> list[Kind]:
    kinds = []
    for name in names:
        bundle = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
        kinds.append(Kind(name, bundle, _sender_of(bundle), routed_recipients(bundle)))
    return kinds


# --------------------------------------------------------------------------------------------------
# Submissions


def referral_id_of(sender: str, message_id: str) -> str:
    """The hub's referral id of a message (schemas.profile): known even when the POST failed."""
    import hashlib

    return "ref-" + hashlib.sha256(f"{sender}:{message_id}".encode()).hexdigest()[:24]


@dataclass
class Sent:
    """One referral as its sender saw it: every attempt's answer (0 = no answer: timeout, refused)."""

    referral_id: str
    kind: Kind
    attempts: list[tuple[int, str, float]] = field(default_factory=list)

    @property
    def status(self) -> int:
        return self.attempts[-1][0] if self.attempts else 0

    @property
    def unanswered(self) -> int:
        return sum(a[0] == 0 for a in self.attempts)

    @property
    def not_acknowledged(self) -> int:
        """Attempts answered 503 broker-unavailable: not accepted, re-sent like those without an answer.
        As there, the first copy may still reach the broker once it is back (the producer keeps it)."""
        return sum(a[0] == 503 and "broker-unavailable" in a[1] for a in self.attempts)

    @property
    def uncertain(self) -> bool:
        """Some attempt's fate is unknown to the sender: it must not be counted as refused outright."""
        return bool(self.unanswered or self.not_acknowledged)


class HubClients:
    """Fast clients of a running hub: API keys made once in the database, one key store, signed POSTs."""

    def __init__(self, hub: RunningHub, orgs: set[str]) -> None:
        from hub.adapters.apikey import ApiKeyStore
        from hub.adapters.sealing import sign_as

        self.hub = hub
        self.engine = sa.create_engine(hub.env["HUB_DATABASE_URL"], pool_size=4)
        keys = ApiKeyStore(self.engine)
        for org in sorted(orgs - hub.keys.keys()):
            hub.keys[org] = keys.create(org, label="fault-test")
        store = hub.key_store()
        self._lock = threading.Lock()
        self._sign = lambda org, body: sign_as(store, org, body)

    def client(self, org: str, timeout: float = 30) -> httpx.Client:
        return httpx.Client(
            base_url=self.hub.base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.hub.keys[org]}"},
        )

    def submit(self, client: httpx.Client, kind: Kind, give_up_at: float) -> Sent:
        """POST a new copy of ``kind``; when no answer comes, or 503 broker-unavailable, POST the very
        same message again, as a connector must (same MessageHeader id: the hub deduplicates), until
        another answer comes or ``give_up_at``."""
        bundle = with_new_message_id(kind.bundle)
        body = json.dumps(bundle, ensure_ascii=False).encode()
        with self._lock:
            signature = self._sign(kind.sender, body)
        sent = Sent(referral_id_of(kind.sender, bundle["entry"][0]["resource"]["id"]), kind)
        while True:
            try:
                answer = client.post(
                    "/v1/referrals",
                    content=body,
                    headers={"Content-Type": "application/fhir+json", "X-Qixin-Signature": signature},
                )
            except httpx.HTTPError as exc:
                sent.attempts.append((0, f"{type(exc).__name__}: {exc}", time.monotonic()))
                if time.monotonic() > give_up_at:
                    return sent
                time.sleep(1.0)
                continue
            sent.attempts.append((answer.status_code, answer.text[:300], time.monotonic()))
            not_acknowledged = answer.status_code == 503 and "broker-unavailable" in answer.text
            if not_acknowledged and time.monotonic() <= give_up_at:
                time.sleep(1.0)  # sooner than the hub's Retry-After: the test has no time to lose
                continue
            if answer.status_code == 202:
                assert answer.json()["referral_id"] == sent.referral_id, answer.text
            return sent


@dataclass
class Load:
    """Signed referrals posted at a steady pace from a few threads until stopped (or ``cap`` accepted)."""

    hub: HubClients
    kinds: list[Kind]
    rate_per_s: float = 3.0
    threads: int = 2
    cap: int = 300  # a safety net on a slow machine; the summary says when it was reached
    answer_timeout: float = 10.0  # a connector's patience per POST before it re-sends the same message
    retry_for: float = 180.0
    sent: list[Sent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _cycle: Iterator[Kind] = field(init=False)
    _claimed: int = 0

    def __post_init__(self) -> None:
        self._cycle = itertools.cycle(self.kinds)

    @property
    def accepted(self) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.status == 202]

    @property
    def refused(self) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.status != 202]

    def start(self) -> Load:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self) -> None:
        clients = {k.sender: self.hub.client(k.sender, self.answer_timeout) for k in self.kinds}
        try:
            while not self._stop.is_set():
                with self._lock:
                    # Refused submissions do not count: the cap is on accepted ones (plus those in flight).
                    if self._claimed - sum(s.status != 202 for s in self.sent) >= self.cap:
                        return
                    self._claimed += 1
                    kind = next(self._cycle)
                started = time.monotonic()
                sent = self.hub.submit(clients[kind.sender], kind, started + self.retry_for)
                with self._lock:
                    self.sent.append(sent)
                # Read each time: a test may raise the rate for a burst.
                interval = self.threads / self.rate_per_s
                self._stop.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            for c in clients.values():
                c.close()

    def wait_accepted(self, n: int, timeout: float, why: str = "") -> None:
        """Wait until ``n`` submissions in all were accepted."""
        n = min(n, self.cap)
        deadline = time.monotonic() + timeout
        while len(self.accepted) < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {len(self.accepted)} of {n} submissions accepted after {timeout:.0f}s {why}; "
                    f"last refusals: {[s.attempts[-1][:2] for s in self.refused[-3:]]}\n"
                    f"api log:\n{self.hub.hub.log('api')[-2000:]}"
                )
            time.sleep(0.1)

    def more(self, n: int, timeout: float, why: str = "") -> None:
        """Wait until ``n`` more submissions than now were accepted."""
        self.wait_accepted(len(self.accepted) + n, timeout, why)

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(self.retry_for + self.answer_timeout + 10)


# --------------------------------------------------------------------------------------------------
# The user's view: every accepted referral reached each of its recipients exactly once


def worker_logs(hub: RunningHub, names: tuple[str, ...]) -> str:
    return "\n".join(f"--- {n}.log (tail) ---\n{hub.log(n)[-2500:]}" for n in names)


def delivery_counts(engine: sa.Engine, referral_ids: set[str]) -> dict[str, Counter[str]]:
    """Per referral: deliveries per recipient in the read model (the recipients' inboxes)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT referral_id, recipient_org FROM deliveries")).all()
    out: dict[str, Counter[str]] = {}
    for rid, org in rows:
        if rid in referral_ids:
            out.setdefault(rid, Counter())[org] += 1
    return out


def wait_all_delivered(
    hub: HubClients, accepted: list[Sent], timeout: float, logs: tuple[str, ...] = ("worker",)
) -> dict[str, Counter[str]]:
    """Bounded wait until each accepted referral has a delivery for each of its recipients."""
    want = {s.referral_id: s.kind.recipients for s in accepted}
    deadline = time.monotonic() + timeout
    while True:
        got = delivery_counts(hub.engine, set(want))
        missing = {
            rid: sorted(r - set(got.get(rid, ()))) for rid, r in want.items() if r - set(got.get(rid, ()))
        }
        if not missing:
            return got
        if time.monotonic() > deadline:
            sample = dict(itertools.islice(missing.items(), 5))
            raise AssertionError(
                f"{len(missing)} of {len(want)} accepted referrals still miss deliveries after "
                f"{timeout:.0f}s, e.g. {sample}\n{worker_logs(hub.hub, logs)}"
            )
        time.sleep(0.5)


def _sender_view(hub: HubClients, sents: list[Sent]) -> list[str]:
    """What the sender sees of each referral: one delivery per recipient, each delivered once."""
    problems = []
    with hub.client(sents[0].kind.sender) as c:
        for s in sents:
            answer = c.get(f"/v1/referrals/{s.referral_id}")
            if answer.status_code != 200:
                problems.append(f"{s.referral_id}: GET answered {answer.status_code} {answer.text[:200]}")
                continue
            view = answer.json()
            orgs = Counter(d["recipient_org"] for d in view["deliveries"])
            delivered = Counter(e["task_id"] for e in view["timeline"] if e["kind"] == "delivered")
            if orgs != Counter(s.kind.recipients) or sorted(delivered.values()) != [1] * len(
                s.kind.recipients
            ):
                problems.append(
                    f"{s.referral_id}: deliveries {dict(orgs)}, delivered events {dict(delivered)}"
                )
    return problems


def assert_exactly_once(hub: HubClients, load: Load, logs: tuple[str, ...] = ("worker",)) -> dict[str, Any]:
    """Every 202 reached exactly its recipients, once each; nothing refused outright appears.

    Checked the ways a user would: the read model (deliveries, timeline), the sender's view of each
    referral (GET /v1/referrals/{id}) and each recipient's inbox (GET /v1/inbox). Returns a summary.
    """
    accepted = load.accepted
    ids = {s.referral_id for s in accepted}
    assert len(ids) == len(accepted), "two accepted submissions got the same referral id"
    # Refused with an answer on every attempt: the sender knows it was not taken; it must not appear.
    refused = {s.referral_id for s in load.refused if not s.uncertain}
    # Some attempt got no answer or no acknowledgement (503 broker-unavailable) and the last was not
    # a 202: the sender cannot know (reported only).
    unknown = {s.referral_id for s in load.refused if s.uncertain}

    got = wait_all_delivered(hub, accepted, timeout=120, logs=logs)
    wrong = [
        (s.referral_id, s.kind.name, dict(got[s.referral_id]))
        for s in accepted
        if got[s.referral_id] != Counter(s.kind.recipients)
    ]
    assert not wrong, (
        f"deliveries differ from the routed recipients: {wrong[:5]}\n{worker_logs(hub.hub, logs)}"
    )

    with hub.engine.connect() as conn:
        events = conn.execute(
            sa.text("SELECT referral_id, task_id FROM timeline WHERE kind = 'delivered'")
        ).all()
        routed = {r[0] for r in conn.execute(sa.text("SELECT referral_id FROM referrals")).all()}
    twice = [task for task, n in Counter(t for rid, t in events if rid in ids).items() if n > 1]
    assert not twice, f"deliveries shown twice in a timeline: {twice[:5]}"
    stray = sorted(refused & routed)
    answers = Counter(s.status for s in load.refused if s.referral_id in refused)
    assert not stray, (
        f"{len(stray)} submissions answered {dict(answers)} were routed and delivered anyway, "
        f"e.g. {stray[:3]}\napi log:\n{hub.hub.log('api')[-2000:]}"
    )

    by_sender: dict[str, list[Sent]] = {}
    for s in accepted:
        by_sender.setdefault(s.kind.sender, []).append(s)
    with ThreadPoolExecutor(4) as pool:
        problems = [p for ps in pool.map(lambda ss: _sender_view(hub, ss), by_sender.values()) for p in ps]
    assert not problems, f"the senders' view disagrees: {problems[:5]}"

    expected_inbox: dict[str, Counter[str]] = {}
    for s in accepted:
        for org in s.kind.recipients:
            expected_inbox.setdefault(org, Counter())[s.referral_id] += 1
    for org, want in expected_inbox.items():
        items: list[dict[str, Any]] = []
        with hub.client(org) as c:
            offset: int | None = 0
            while offset is not None:
                page = c.get("/v1/inbox", params={"limit": 500, "offset": offset}).json()
                items += page["items"]
                offset = page.get("next_offset")
        inbox = Counter(i["referral_id"] for i in items if i["referral_id"] in ids)
        extra = {r: n for r, n in inbox.items() if n > 1}
        assert inbox == want, (
            f"{org}'s inbox holds {len(inbox)} of its {len(want)} referrals; shown more than once: {extra}"
        )
    return {
        "accepted": len(accepted),
        "load capped": len(accepted) >= load.cap,
        "deliveries": sum(len(s.kind.recipients) for s in accepted),
        "re-sent after no answer": sum(1 for s in accepted if s.unanswered),
        "re-sent after 503 broker-unavailable": sum(1 for s in accepted if s.not_acknowledged),
        "refused": dict(answers),
        "unknown outcome": len(unknown),
        "unknown outcome but delivered": len(unknown & routed),
    }


# --------------------------------------------------------------------------------------------------
# Per-referral ordering


@dataclass
class Acknowledger:
    """A recipient's clerk: as soon as a delivery shows up, acknowledge it (requested -> received)."""

    hub: HubClients
    load: Load
    every: int = 3  # acknowledge every n-th accepted referral (all its recipients)
    acked: list[tuple[str, str, str]] = field(default_factory=list)  # (referral, recipient, task)
    failures: list[str] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Acknowledger:
        self._thread = threading.Thread(target=self._run, name="acknowledger", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        clients: dict[str, httpx.Client] = {}
        handled = 0
        try:
            while True:
                accepted = self.load.accepted
                if handled >= len(accepted):
                    if self._done.is_set():
                        return
                    time.sleep(0.2)
                    continue
                sent, handled = accepted[handled], handled + 1
                if handled % self.every:
                    continue
                for org in sorted(sent.kind.recipients):
                    if org not in clients:
                        clients[org] = self.hub.client(org)
                    self._acknowledge(clients[org], sent.referral_id, org)
        finally:
            for c in clients.values():
                c.close()

    def _acknowledge(self, c: httpx.Client, referral_id: str, org: str) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answer = c.get(f"/v1/referrals/{referral_id}")
            if answer.status_code == 200 and answer.json()["deliveries"]:
                task = answer.json()["deliveries"][0]["task_id"]
                change = c.post(f"/v1/tasks/{task}/status", json={"status": "received"})
                if change.status_code == 202:
                    self.acked.append((referral_id, org, task))
                else:
                    self.failures.append(f"{org} {task}: {change.status_code} {change.text[:200]}")
                return
            time.sleep(0.2)
        self.failures.append(f"{org} never saw {referral_id}")

    def finish(self, timeout: float) -> None:
        self._done.set()
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"acknowledger still busy after {timeout:.0f}s"


def assert_delivery_before_status(hub: HubClients, acked: list[tuple[str, str, str]]) -> None:
    """Each acknowledged task: delivered, then received, in that order, once each; now 'received'."""
    problems = []
    with hub.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT referral_id, sender_org FROM referrals")).all()
    sender_of: dict[str, str] = {r[0]: r[1] for r in rows}
    clients: dict[str, httpx.Client] = {}
    try:
        for rid, org, task in acked:
            if sender_of[rid] not in clients:
                clients[sender_of[rid]] = hub.client(sender_of[rid])
            c = clients[sender_of[rid]]
            view = c.get(f"/v1/referrals/{rid}").json()
            story = [
                (e["kind"], e["to_status"])
                for e in view["timeline"]
                if e["task_id"] == task and e["kind"] in ("delivered", "status")  # not openings
            ]
            status = next(d["status"] for d in view["deliveries"] if d["task_id"] == task)
            if story != [("delivered", "requested"), ("status", "received")] or status != "received":
                problems.append(f"{rid} -> {org}: timeline {story}, status now {status}")
    finally:
        for c in clients.values():
            c.close()
    assert not problems, f"per-referral order broken for {len(problems)} tasks: {problems[:5]}"


# --------------------------------------------------------------------------------------------------
# Consumer group


def _assigned(assignment: Any, topic: str) -> list[int]:
    """Partitions of ``topic`` in a member assignment, as kafka-python hands it (dict or object)."""
    if isinstance(assignment, dict):
        entries = [(a["topic"], a["partitions"]) for a in assignment.get("assigned_partitions") or []]
    else:
        entries = [(a.topic, a.partitions) for a in getattr(assignment, "assigned_partitions", None) or []]
    return sorted(p for t, ps in entries if t == topic for p in ps)


def group_assignment(bootstrap: str, group: str, topic: str) -> dict[str, list[int]]:
    """Partitions of ``topic`` each member of the consumer group holds (member id -> partitions)."""
    import logging

    from kafka import KafkaAdminClient

    # kafka-python cannot parse faust's subscription metadata and logs each member at WARNING.
    logging.getLogger("kafka.admin._groups").setLevel(logging.ERROR)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="qixin-faults", request_timeout_ms=10_000)
    try:
        info = admin.describe_groups([group])[group]
    finally:
        admin.close()
    return {m["member_id"][-12:]: _assigned(m.get("member_assignment"), topic) for m in info["members"]}


def assert_readable(hub: HubClients, delivery_ids: set[str]) -> None:
    """Each recipient opens these deliveries: the sealed view decrypts (one seal kept per delivery)."""
    with hub.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT delivery_id, task_id, recipient_org FROM deliveries")).all()
    wanted = [(task, org) for did, task, org in rows if did in delivery_ids]
    assert len(wanted) == len(delivery_ids), "a delivery to open is missing from the read model"
    problems = []
    clients: dict[str, httpx.Client] = {}
    try:
        for task, org in wanted:
            if org not in clients:
                clients[org] = hub.client(org)
            answer = clients[org].get(f"/v1/tasks/{task}/content")
            body = answer.json() if answer.status_code == 200 else {}
            if not body.get("available") or (body.get("content") or {}).get("resourceType") != "Bundle":
                problems.append(f"{org} {task}: {answer.status_code} {answer.text[:200]}")
    finally:
        for c in clients.values():
            c.close()
    assert not problems, f"{len(problems)} deliveries cannot be opened by their recipient: {problems[:3]}"
