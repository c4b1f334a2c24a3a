"""Operators see throughput, latency, dead letters and lag in Prometheus metrics and JSON logs, never PII."""

from __future__ import annotations

import json
import re
import time

import httpx

from tests.support.hub import RunningHub, sample, with_new_message_id

SCHOOL = "school-songjiang-no2-middle"
CAMHS = "camhs-songjiang-mhc"
NAME = "张小明"


def _value(text: str, metric: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_the_pipeline_and_carry_no_identifiers(hub: RunningHub) -> None:
    referral_id = hub.submit(SCHOOL, with_new_message_id(sample("referral-school-camhs-high.json"))).json()[
        "referral_id"
    ]
    hub.wait_inbox(CAMHS, referral_id)

    api = httpx.get(f"{hub.base_url}/metrics").text
    assert _value(api, "qixin_api_requests_total", method="POST", route="/v1/referrals", status="202") >= 1
    worker_url = f"http://127.0.0.1:{hub.env['HUB_WORKER__METRICS_PORT']}/metrics"
    deadline = time.monotonic() + 20
    worker = ""
    while time.monotonic() < deadline:
        worker = httpx.get(worker_url).text
        if _value(worker, "qixin_worker_events_total", step="route_referrals", outcome="ok") >= 1:
            break
        time.sleep(0.5)
    assert _value(worker, "qixin_worker_events_total", step="route_referrals", outcome="ok") >= 1
    assert _value(worker, "qixin_deliveries_total", legal_basis="consent") >= 1
    assert "qixin_worker_step_seconds_bucket" in worker
    for text in (api, worker):
        assert NAME not in text
        assert referral_id not in text
        assert not re.search(r"psn:[a-z0-9]+:", text)


def test_worker_logs_are_json_without_pii(hub: RunningHub) -> None:
    lines = [line for line in hub.log("worker").splitlines() if line.startswith("{")]
    assert lines, hub.log("worker")
    for line in lines:
        record = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= record.keys()
        assert NAME not in line
