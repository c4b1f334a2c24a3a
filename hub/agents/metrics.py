"""Worker metrics (Prometheus): throughput, step latency, dead letters, SLA events, consumer lag.

Labels are step names, reason codes and topic names only: no ids, no PII.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import faust
from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

EVENTS = Counter("qixin_worker_events_total", "Records processed by a stream step", ["step", "outcome"])
STEP_SECONDS = Histogram(
    "qixin_worker_step_seconds",
    "Time a stream step spends on one record",
    ["step"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DEAD_LETTERS = Counter("qixin_dead_letters_total", "Dead letters written", ["step", "reason"])
DELIVERIES = Counter("qixin_deliveries_total", "Deliveries created", ["legal_basis"])
REFUSALS = Counter("qixin_disclosure_refusals_total", "Disclosures refused", ["reason"])
ESCALATIONS = Counter(
    "qixin_sla_escalations_total", "SLA reminders (level 0) and escalations", ["kind", "level"]
)
LAG = Gauge("qixin_consumer_lag", "Records not yet read by this worker", ["topic"])


@contextmanager
def timed(step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    except Exception:
        EVENTS.labels(step, "error").inc()
        raise
    else:
        EVENTS.labels(step, "ok").inc()
    finally:
        STEP_SECONDS.labels(step).observe(time.perf_counter() - start)


def serve(app: faust.App, port: int) -> None:
    """Expose /metrics on loopback and refresh the lag gauge from faust's monitor."""
    if port <= 0:
        return
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        log.warning("metrics port unavailable", extra={"port": port, "error": type(exc).__name__})
        return

    @app.timer(interval=5.0, name="consumer_lag")
    async def consumer_lag() -> None:
        monitor = app.monitor
        totals: dict[str, int] = {}
        for tp, end in monitor.tp_end_offsets.items():
            read = monitor.tp_read_offsets.get(tp, end)
            totals[tp.topic] = totals.get(tp.topic, 0) + max(0, end - read)
        for topic, lag in totals.items():
            LAG.labels(topic).set(lag)
