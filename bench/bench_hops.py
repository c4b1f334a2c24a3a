"""What one hand-off costs on this machine: between threads, to the thread pool, over loopback, to PostgreSQL.

Run: .venv/bin/python bench/bench_hops.py [--n 5000]

A referral that arrives alone crosses many such hops (HTTP in, produce, fetch, the consumer thread's
hand-off to the event loop, the routing step's hand-off to a thread, its SQL round trips, produce
again, the audit step's fetch); at low rates the hub's CPU per referral is mostly their price, not
the steps' own work (bench/README.md, round 6). Each figure is wall and CPU microseconds per round
trip, the CPU of every process taking part (both threads' process; both ends of the socket; the
client and its PostgreSQL backend; the client and the broker). With HUB_DATABASE_URL (the hub's URL
form) the PostgreSQL round trip is measured too, and with KAFKA_BOOTSTRAP a Kafka produce (acks=all,
idempotent) and a produce -> consume round trip on a fresh one-partition topic (deleted afterwards;
the broker's CPU is read from /proc when it runs on this machine); without them, those rows are
skipped and say so. Writes bench/results/hops.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import get_context
from pathlib import Path
from typing import Any

# The pipeline benchmark's /proc readers (this directory is on sys.path when a script in it runs).
from bench_pipeline import RESULTS, cpu_seconds, side_processes

try:  # the hub's processes run on uvloop when it is installed (it is in the lock file)
    import uvloop

    run_loop: Callable[[Any], Any] = uvloop.run
    LOOP = "uvloop"
except ImportError:  # pragma: no cover - without uvloop the hub runs asyncio's loop too
    run_loop = asyncio.run
    LOOP = "asyncio"


def measured(n: int, run: Callable[[], None], other_pid: int | None = None) -> dict[str, float]:
    """Wall and CPU microseconds per round trip of ``run`` (which makes n of them)."""
    other0 = cpu_seconds(other_pid) if other_pid else 0.0
    w0, c0 = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if other_pid:
        cpu += cpu_seconds(other_pid) - other0
    return {"n": n, "wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6}


def thread_queue(n: int) -> dict[str, float]:
    there: queue.SimpleQueue[int] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo() -> None:
        for _ in range(n):
            back.put(there.get())

    def run() -> None:
        t = threading.Thread(target=echo)
        t.start()
        for i in range(n):
            there.put(i)
            back.get()
        t.join()

    return measured(n, run)


def to_thread(n: int) -> dict[str, float]:
    async def many() -> None:
        for _ in range(n):
            await asyncio.to_thread(int)

    return measured(n, lambda: run_loop(many()))


def threadsafe_wake(n: int) -> dict[str, float]:
    """A thread wakes the event loop with call_soon_threadsafe and waits for its answer: the shape
    of faust's hand-off between its consumer thread and the event loop."""
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    async def many() -> None:
        loop = asyncio.get_running_loop()
        woken: asyncio.Queue[int] = asyncio.Queue()

        def caller() -> None:
            for i in range(n):
                loop.call_soon_threadsafe(woken.put_nowait, i)
                back.get()

        t = threading.Thread(target=caller)
        t.start()
        for _ in range(n):
            back.put(await woken.get())
        await asyncio.to_thread(t.join)

    return measured(n, lambda: run_loop(many()))


def _echo_server(sock: socket.socket) -> None:
    conn, _ = sock.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(65536):
        conn.sendall(data)


def loopback_tcp(n: int, size: int = 200) -> dict[str, float]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    child = get_context("fork").Process(target=_echo_server, args=(server,), daemon=True)
    child.start()
    assert child.pid is not None
    client = socket.create_connection(server.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = b"x" * size

    def run() -> None:
        for _ in range(n):
            client.sendall(payload)
            got = 0
            while got < size:
                got += len(client.recv(65536))

    try:
        return measured(n, run, child.pid)
    finally:
        client.close()
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
        server.close()


def postgres(n: int, url: str) -> dict[str, Any]:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = int(row[0])
        local = Path(f"/proc/{backend}").exists()  # the server's backend is on this machine

        def run() -> None:
            for _ in range(n):
                conn.execute("SELECT 1").fetchone()

        out: dict[str, Any] = measured(n, run, backend if local else None)
        out["includes_server_cpu"] = local
        return out


def kafka(n: int, bootstrap: str) -> dict[str, dict[str, Any]]:
    """Produce (acks=all, idempotent, as the hub's producers) and produce -> consume round trips, one
    record at a time on a fresh one-partition topic; CPU of this process and of the broker."""
    import uuid

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    local = host in ("127.0.0.1", "localhost")
    brokers = [pid for name, pid in side_processes("", int(port)).items() if name.startswith("broker")]
    broker = brokers[0] if local and brokers else None
    topic = f"qixin-hops-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="qixin-bench-hops")
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    out: dict[str, dict[str, Any]] = {}

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest")
        await producer.start()
        await consumer.start()
        try:
            await consumer.seek_to_end()
            record = b"x" * 1000
            for _ in range(50):  # connections, metadata and the JIT's first compilations
                await producer.send_and_wait(topic, record)
                await consumer.getone()

            async def produce() -> None:
                for _ in range(n):
                    await producer.send_and_wait(topic, record)

            async def produce_consume() -> None:
                for _ in range(n):
                    await producer.send_and_wait(topic, record)
                    await consumer.getone()

            for name, step in (("produce", produce), ("produce_consume", produce_consume)):
                b0 = cpu_seconds(broker) if broker else 0.0
                w0, c0 = time.perf_counter(), time.process_time()
                await step()
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                row: dict[str, Any] = {"n": n, "wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6}
                if broker:
                    row["broker_cpu_us"] = (cpu_seconds(broker) - b0) / n * 1e6
                    row["cpu_us"] += row["broker_cpu_us"]
                out[name] = row
        finally:
            await consumer.stop()
            await producer.stop()

    try:
        run_loop(run())
    finally:
        admin.delete_topics([topic])
        admin.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="round trips per measurement")
    p.add_argument("--output", type=Path, default=RESULTS / "hops.json")
    args = p.parse_args()
    if args.n < 1:
        raise SystemExit("--n must be at least 1")

    hops: dict[str, Any] = {}
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("thread <-> thread (queue ping-pong)", lambda: thread_queue(args.n)),
        ("event loop -> asyncio.to_thread -> back", lambda: to_thread(args.n)),
        ("thread -> call_soon_threadsafe -> event loop -> back", lambda: threadsafe_wake(args.n)),
        ("process <-> process, loopback TCP, 200 B", lambda: loopback_tcp(args.n)),
    ]
    url = os.environ.get("HUB_DATABASE_URL", "")
    if url.startswith("postgresql"):
        plan.append(("PostgreSQL SELECT 1 (psycopg, client + backend)", lambda: postgres(args.n, url)))
    for name, run in plan:
        hops[name] = run()
    if not url.startswith("postgresql"):
        hops["PostgreSQL SELECT 1 (psycopg, client + backend)"] = {"skipped": "HUB_DATABASE_URL not set"}
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "")
    names = {
        "produce": "Kafka produce, acks=all, 1 KB (client + broker)",
        "produce_consume": "Kafka produce -> consume, 1 KB (client + broker)",
    }
    if bootstrap:
        try:
            for key, row in kafka(min(args.n, 2000), bootstrap).items():
                hops[names[key]] = row
        except Exception as exc:  # an unreachable broker: say so in the rows, keep the other figures
            for name in names.values():
                hops[name] = {"skipped": f"Kafka at {bootstrap}: {type(exc).__name__}: {exc}"[:200]}
    else:
        for name in names.values():
            hops[name] = {"skipped": "KAFKA_BOOTSTRAP not set"}

    document = {
        "benchmark": "hand-off costs (round trips)",
        "python": platform.python_version(),
        "event_loop": LOOP,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "hops": hops,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    width = max(len(k) for k in hops)
    print(f"\n  {'round trip (event loop: ' + LOOP + ')':<{width}}  {'wall us':>9}  {'CPU us':>9}")
    for name, v in hops.items():
        if "skipped" in v:
            print(f"  {name:<{width}}  skipped: {v['skipped']}")
        else:
            broker = f"  (broker {v['broker_cpu_us']:.1f})" if "broker_cpu_us" in v else ""
            print(f"  {name:<{width}}  {v['wall_us']:9.1f}  {v['cpu_us']:9.1f}{broker}")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
