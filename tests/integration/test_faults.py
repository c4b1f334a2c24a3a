"""Fault tests: a worker SIGKILLed under load, broker restarts, two workers rebalancing.

Each ends with the user's view: every referral the API accepted (202) reached each recipient the
district's rules name, exactly once (read model, the sender's GET /v1/referrals/{id}, each inbox),
and nothing refused outright shows up. The pipeline is at-least-once with idempotent effects: a step
waits for the broker's acks of what it produced before its input offset is committed, and delivery ids
are derived from (referral, recipient), so a record processed twice yields the same delivery, which the
read model stores once. Kafka transactions are not used (faust's processing_guarantee stays
at_least_once). Each test prints a summary line, with the duplicates the topic really carried.

The brokers here are private (own data, ports and run files; the jars are shared), because these tests
stop them. Run alone: ``pytest tests/integration/test_faults.py -rP``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.faults import (
    FAST_GROUP_ENV,
    Acknowledger,
    HubClients,
    Kind,
    Load,
    PrivateKafka,
    assert_delivery_before_status,
    assert_exactly_once,
    assert_readable,
    group_assignment,
    load_kinds,
    partition_leaders,
    private_kafka,
    topic_census,
    wait_all_delivered,
)
from tests.support.hub import RunningHub, make_hub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SUBMITTED = "referrals.submitted"
CREATED = "deliveries.created"


@dataclass
class Rig:
    kafka: PrivateKafka
    hub: RunningHub
    clients: HubClients
    kinds: list[Kind]

    def topic(self, name: str) -> str:
        return self.hub.prefix + name

    @property
    def group(self) -> str:
        return "qixin-hub-" + self.hub.prefix.strip(".")

    def verify(self, name: str, load: Load, logs: tuple[str, ...], started: float, **extra: object) -> None:
        """Exactly once for the user; then open what a step produced twice, plus a few others."""
        verdict = assert_exactly_once(self.clients, load, logs)
        ids = {s.referral_id for s in load.sent}
        census = topic_census(self.kafka.bootstrap, self.topic(CREATED), "delivery_id", ids)
        again = sum(n - 1 for n in census.values())
        twice = {d for d, n in census.items() if n > 1}
        assert_readable(self.clients, twice | set(sorted(set(census) - twice)[:10]))
        print(
            f"\n[{name}] {verdict} | {CREATED}: {sum(census.values())} records for {len(census)} "
            f"deliveries ({again} re-sent by a reprocessed step) | {time.monotonic() - started:.0f}s "
            + " ".join(f"{k}={v}" for k, v in extra.items())
        )


def _rig(stack: ExitStack, brokers: int, postgres: str, tmp: Path, **env: str) -> Rig:
    kafka = stack.enter_context(private_kafka(brokers))
    hub = make_hub(
        tmp,
        kafka.bootstrap,
        postgres,
        extra_env={**FAST_GROUP_ENV, "HUB_API__SUBMIT_RATE_PER_S": "1000", **env},
    )
    stack.callback(hub.stop_all)
    kinds = load_kinds()
    orgs = {k.sender for k in kinds} | {org for k in kinds for org in k.recipients}
    return Rig(kafka, hub, HubClients(hub, orgs), kinds)


@pytest.fixture(scope="module")
def single(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A private single-node broker (restarted by one test) and a hub with one worker on it.

    The API gives up waiting for the broker after 3 s, so that a POST during the broker restart is
    answered (503) within the load's patience of 5 s rather than left without an answer.
    """
    with ExitStack() as stack:
        yield _rig(stack, 1, postgres, tmp_path_factory.mktemp("single"), HUB_KAFKA__PUBLISH_TIMEOUT_S="3")


@pytest.fixture(scope="module")
def cluster(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A private 3-broker cluster; the hub's topics (and faust's own) get 3 replicas, min ISR 2."""
    with ExitStack() as stack:
        yield _rig(stack, 3, postgres, tmp_path_factory.mktemp("cluster"), HUB_KAFKA__REPLICATION_FACTOR="3")


def only_worker(hub: RunningHub) -> str:
    """The name of the worker process the rig runs (tests replace it); a new one if none runs."""
    alive = [n for n, p in hub.processes.items() if n.startswith("worker") and p.poll() is None]
    if not alive:  # an earlier test failed half-way
        hub.start("worker", "worker")
        return "worker"
    assert len(alive) == 1, alive
    return alive[0]


def test_worker_sigkilled_under_load_delivers_each_referral_once(single: Rig) -> None:
    hub, started = single.hub, time.monotonic()
    worker = only_worker(hub)
    load = Load(single.clients, single.kinds).start()
    try:
        load.wait_accepted(20, 120)
        wait_all_delivered(single.clients, load.accepted[:5], 120, (worker,))  # the worker is mid-stream
        hub.stop(worker, signal.SIGKILL)
        load.more(15, 120, "while no worker ran")  # intake does not need the worker
        hub.start(worker, "worker")
        load.more(30, 180, "after the worker restarted")
    finally:
        load.stop()
    single.verify("sigkill", load, (worker,), started)


def test_two_workers_rebalancing_keep_exactly_once_and_per_referral_order(single: Rig) -> None:
    hub, started = single.hub, time.monotonic()
    first = only_worker(hub)
    second = "worker-b" if first != "worker-b" else "worker-c"
    load = Load(single.clients, single.kinds).start()
    clerk = Acknowledger(single.clients, load).start()
    try:
        load.wait_accepted(20, 120)
        hub.start(second, "worker")
        # Rebalance 1: the newcomer must end up with some of the intake partitions.
        deadline = time.monotonic() + 120
        while True:
            members = group_assignment(single.kafka.bootstrap, single.group, single.topic(SUBMITTED))
            if len(members) == 2 and all(members.values()):
                break
            assert time.monotonic() < deadline, f"no rebalance to 2 workers: {members}\n{hub.log(second)}"
            time.sleep(0.5)
        load.more(20, 120, "with two workers")
        # A burst, so that the first worker is in the middle of routing when it is told to stop:
        # an orderly stop must not lose the record it was busy with.
        steady, load.rate_per_s = load.rate_per_s, 30
        load.more(20, 60, "during the burst")
        hub.stop(first, signal.SIGTERM)  # rebalance 2: the survivor takes every partition back
        load.rate_per_s = steady
        load.more(20, 120, "after the first worker left")
    finally:
        load.stop()
        clerk.finish(180)
    single.verify("rebalance", load, (first, second), started, acknowledged=len(clerk.acked))
    assert not clerk.failures, clerk.failures[:5]
    assert clerk.acked, "the recipients acknowledged nothing"
    assert_delivery_before_status(single.clients, clerk.acked)


def test_single_broker_full_restart_loses_and_doubles_nothing(single: Rig) -> None:
    """The only broker stops (clean shutdown) and starts again on the same data.

    While it is away a POST waits at most HUB_KAFKA__PUBLISH_TIMEOUT_S (3 s here) for the broker's
    acknowledgement and is then answered 503 broker-unavailable: not accepted. Nothing is answered
    202 without the broker's acknowledgement; /healthz answers 503 "degraded" (broker unreachable).
    A connector re-sends the same message after a 503 (or no answer); the producer may still deliver
    the first copy once the broker is back, and the hub derives the referral id from the message, so
    the copies collapse into one referral with one delivery per recipient.
    """
    hub, started = single.hub, time.monotonic()
    worker = only_worker(hub)
    load = Load(single.clients, single.kinds, answer_timeout=5).start()
    health = []
    try:
        load.wait_accepted(20, 120)
        wait_all_delivered(single.clients, load.accepted[:5], 120, (worker,))
        single.kafka.stop()
        down = time.monotonic()
        while time.monotonic() - down < 8:  # the broker stays away a while, submissions going on
            try:
                health.append(httpx.get(f"{hub.base_url}/healthz", timeout=5).status_code)
            except httpx.TimeoutException:
                health.append(0)  # no answer in 5 s: not healthy either
            time.sleep(0.5)
        single.kafka.start()
        load.more(20, 180, "after the broker came back")
    finally:
        load.stop()
    assert health and 200 not in health, f"/healthz claimed all is well without a broker: {health}"
    assert hub.processes[worker].poll() is None, f"the worker died with the broker:\n{hub.log(worker)}"
    # The API answered within its bound while the broker was away, instead of keeping POSTs waiting.
    refusals = sum(s.not_acknowledged for s in load.sent)
    assert refusals, (
        f"no POST was answered 503 broker-unavailable while the broker was away:\n{hub.log('api')}"
    )
    single.verify(
        "broker-restart", load, (worker,), started, healthz=sorted(set(health)), answered_503=refusals
    )


def test_broker_leading_most_partitions_crashes_and_returns(cluster: Rig) -> None:
    """SIGKILL of the broker that leads the most of the hub's partitions, under load, then restart.

    With 3 replicas and min ISR 2, acks=all writes go on with one broker down: the API keeps answering
    202 (after a leader election pause), and the workers follow the new leaders.
    """
    hub, started = cluster.hub, time.monotonic()
    worker = only_worker(hub)
    load = Load(cluster.clients, cluster.kinds).start()
    try:
        load.wait_accepted(20, 120)
        wait_all_delivered(cluster.clients, load.accepted[:5], 120, (worker,))
        topics = [cluster.topic(t) for t in (SUBMITTED, CREATED, "tasks.status-changed")]
        node, led = partition_leaders(cluster.kafka.bootstrap, topics).most_common(1)[0]
        cluster.kafka.kill_node(node)
        load.more(20, 120, f"with broker {node} down")
        cluster.kafka.start_node(node)
        load.more(20, 120, f"after broker {node} came back")
    finally:
        load.stop()
    cluster.verify("cluster-node-crash", load, (worker,), started, killed_node=node, it_led=led)
    assert not load.refused, f"refused with 2 of 3 brokers up: {[s.attempts for s in load.refused[:3]]}"
