"""SIGKILL of the worker mid-stream: after a restart every accepted referral is delivered exactly once."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.hub import RunningHub, make_hub, sample, with_new_message_id

SCHOOL = "school-songjiang-no2-middle"
CAMHS = "camhs-songjiang-mhc"
N = 60


@pytest.fixture
def crash_hub(kafka: str, postgres: str, tmp_path: Path) -> Iterator[RunningHub]:
    running = make_hub(tmp_path, kafka, postgres)
    try:
        yield running
    finally:
        running.stop_all()


def test_sigkill_worker_then_restart_delivers_each_referral_once(crash_hub: RunningHub) -> None:
    hub = crash_hub
    base = sample("referral-school-camhs-high.json")
    accepted = []
    for _ in range(N):
        answer = hub.submit(SCHOOL, with_new_message_id(base))
        assert answer.status_code == 202, answer.text
        accepted.append(answer.json()["referral_id"])
        if len(accepted) == N // 3:
            hub.wait_inbox(CAMHS, accepted[0])  # the worker is mid-stream
            hub.stop("worker", signal.SIGKILL)
    hub.start("worker", "worker")

    engine = sa.create_engine(hub.env["HUB_DATABASE_URL"])
    deadline = time.monotonic() + 120
    seen: Counter[str] = Counter()
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT referral_id FROM deliveries")).all()
        seen = Counter(r[0] for r in rows)
        if set(accepted) <= set(seen):
            break
        time.sleep(0.5)
    engine.dispose()
    assert set(accepted) <= set(seen), f"missing {len(set(accepted) - set(seen))}\n{hub.log('worker')}"
    assert max(seen.values()) == 1
    with hub.client(CAMHS) as camhs:
        inbox = camhs.get("/v1/inbox", params={"limit": 500}).json()["items"]
        assert Counter(i["referral_id"] for i in inbox) == Counter(accepted)
        timeline = camhs.get(f"/v1/referrals/{accepted[N // 3]}").json()["timeline"]
    assert [e["kind"] for e in timeline] == ["delivered"]
