"""Start the real hub (API + worker processes) against the test broker and database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.support.servers import REPO, fresh_database

if TYPE_CHECKING:
    from schemas.envelope import ReferralSubmitted

SAMPLES = REPO / "schemas" / "samples"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningHub:
    base_url: str
    env: dict[str, str]
    var_dir: Path
    prefix: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    # -- processes -------------------------------------------------------------------------------
    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.var_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub", *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        self.processes[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.processes.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def log(self, name: str) -> str:
        path = self.var_dir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def worker_logs(self) -> str:
        """The tail of every worker's log (one "worker", or one per role), for a failure message."""
        names = sorted(p.stem for p in self.var_dir.glob("worker*.log"))
        return "\n".join(f"--- {name}.log\n{self.log(name)}" for name in names)

    def wait_api(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.processes["api"].poll() is not None:
                break
            time.sleep(0.3)
        raise AssertionError(f"API not healthy:\n{self.log('api')}")

    # -- HTTP --------------------------------------------------------------------------------------
    def key_for(self, org: str) -> str:
        if org not in self.keys:
            out = subprocess.run(
                [sys.executable, "-m", "hub", "apikey", "create", org],
                env=self.env,
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
            )
            self.keys[org] = out.stdout.strip().splitlines()[-1]
        return self.keys[org]

    def client(self, org: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, timeout=30, headers={"Authorization": f"Bearer {self.key_for(org)}"}
        )

    def key_store(self) -> Any:
        from hub.adapters.keystore import KeyStore
        from hub.settings import KeySettings

        return KeyStore.open(KeySettings(store_dir=self.var_dir / "keys"))

    def sign(self, org: str, body: bytes) -> str:
        from hub.adapters.sealing import sign_as

        return sign_as(self.key_store(), org, body)

    def submit(self, org: str, bundle: dict[str, Any], *, signed_by: str | None = None) -> httpx.Response:
        body = json.dumps(bundle, ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/fhir+json",
            "X-Qixin-Signature": self.sign(signed_by or org, body),
        }
        with self.client(org) as c:
            return c.post("/v1/referrals", content=body, headers=headers)

    def wait_inbox(self, org: str, referral_id: str, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.client(org) as c:
            while time.monotonic() < deadline:
                items = [
                    i
                    for i in c.get("/v1/inbox", params={"limit": 500}).json()["items"]
                    if i["referral_id"] == referral_id
                ]
                if items:
                    return items
                time.sleep(0.2)
        raise AssertionError(f"{referral_id} never reached {org}'s inbox\nworker log:\n{self.log('worker')}")


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def with_new_message_id(bundle: dict[str, Any]) -> dict[str, Any]:
    """A copy of a sample that the hub sees as a new referral (new MessageHeader id)."""
    copy = json.loads(json.dumps(bundle))
    copy["entry"][0]["resource"]["id"] = "mh-" + uuid.uuid4().hex[:12]
    return copy


def sealed_intake(sealing: Any, bundle: dict[str, Any]) -> ReferralSubmitted:
    """What the API puts on referrals.submitted for ``bundle`` under a new MessageHeader id:
    validated, sealed for the hub, as a ``ReferralSubmitted``. For in-process tests and benchmarks
    of the routing step."""
    from hub.adapters.clock import SystemClock
    from schemas.envelope import ReferralSubmitted
    from schemas.profile import validate_referral

    bundle = with_new_message_id(bundle)
    body = json.dumps(bundle, ensure_ascii=False).encode()
    v = validate_referral(bundle, size=len(body))
    token, kid = sealing.seal_for_hub(v.referral_id, body)
    return ReferralSubmitted(
        event_id=str(uuid.uuid4()),
        referral_id=v.referral_id,
        idempotency_key=v.idempotency_key,
        submitted_at=SystemClock().now(),
        student_pseudonym=v.student_pseudonym,
        facts=v.facts,
        sealed_bundle=token,
        bundle_key_id=kid,
    )


def make_hub(
    tmp: Path,
    bootstrap: str,
    pg_admin_url: str,
    *,
    worker: bool = True,
    extra_env: dict[str, str] | None = None,
    worker_roles: tuple[str, ...] = ("all",),
) -> RunningHub:
    """A hub on a fresh topic prefix and database: the API and, with ``worker``, one worker process
    per entry of ``worker_roles`` ("worker" for all steps, "worker-<role>" for a role)."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    db_url = fresh_database(pg_admin_url, prefix.rstrip("."))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_KAFKA__BOOTSTRAP": bootstrap,
        "HUB_KAFKA__TOPIC_PREFIX": prefix,
        "HUB_KAFKA__PARTITIONS": "3",
        "HUB_DATABASE_URL": db_url,
        "HUB_VAR_DIR": str(tmp),
        "HUB_API__PORT": str(port),
        "HUB_WORKER__LOG_LEVEL": "info",
        "HUB_WORKER__METRICS_PORT": str(free_port()),
    }
    env.update(extra_env or {})
    hub = RunningHub(base_url=f"http://127.0.0.1:{port}", env=env, var_dir=tmp, prefix=prefix)
    subprocess.run(
        [sys.executable, "-m", "hub", "topics", "apply"], env=env, check=True, cwd=REPO, capture_output=True
    )
    # One process creates the key store before the API and the worker both open it.
    subprocess.run(
        [sys.executable, "-m", "hub", "keys", "init"], env=env, check=True, cwd=REPO, capture_output=True
    )
    hub.start("api", "api")
    if worker:
        for role in worker_roles:
            if role == "all":
                hub.start("worker", "worker")
            else:  # several workers on one host: a metrics port each
                hub.start(
                    f"worker-{role}",
                    "worker",
                    "--role",
                    role,
                    env={"HUB_WORKER__METRICS_PORT": str(free_port())},
                )
    hub.wait_api()
    return hub


def wait_for(what: str, probe: Callable[[], Any], hub: RunningHub, timeout: float = 60) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with the workers' logs otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{hub.worker_logs()}")


def new_student(bundle: dict[str, Any]) -> dict[str, Any]:
    """A copy about another student, so consent changes in one test cannot touch another's."""
    copy = with_new_message_id(bundle)
    for entry in copy["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Patient":
            res["identifier"][0]["value"] = "psn:k1:" + uuid.uuid4().hex[:16].upper()
    return copy
