"""`hub up`, `hub worker`, `hub api`, `hub demo`, `hub apikey`: run the hub's processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import httpx
import typer

from hub.settings import REPO_ROOT, WORKER_ROLES, Settings, WorkerRole, load_settings

SAMPLES = REPO_ROOT / "schemas" / "samples"


def _port_of(bootstrap: str) -> int:
    return int(bootstrap.split(",")[0].rsplit(":", 1)[1])


def _wait_healthy(base_url: str, timeout_s: float, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"process {proc.args} exited with {proc.returncode}; see var/logs/")
        try:
            answer = httpx.get(f"{base_url}/healthz", timeout=5)
            if answer.status_code == 200:
                return
            last = answer.text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise RuntimeError(f"the API did not become healthy within {timeout_s:.0f}s ({last})")


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "hub", *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def up(
    demo: bool = typer.Option(True, help="Load the sample directory and post the sample referrals"),
    start_kafka: bool = typer.Option(True, help="Start the local broker if none answers"),
) -> None:
    """Start what is missing (broker, topics, worker, API); Ctrl-C stops everything it started."""
    from hub.adapters.kafka import apply_topics, broker_reachable

    settings = load_settings()
    t0 = time.monotonic()
    started_kafka = False
    if not broker_reachable(settings.kafka.bootstrap, 3.0):
        if not start_kafka:
            typer.echo(f"no broker at {settings.kafka.bootstrap}", err=True)
            raise typer.Exit(1)
        typer.echo(f"starting Apache Kafka on {settings.kafka.bootstrap} (infra/kafka/kafka.sh)")
        from hub.cli.kafka import run_script

        run_script("start", env={"KAFKA_PORT": str(_port_of(settings.kafka.bootstrap))})
        started_kafka = True
    for result in apply_topics(settings.kafka):
        if result.created:
            typer.echo(f"created topic {result.name}")
    from hub.adapters.sealing import open_or_initialise

    open_or_initialise(settings.keys)  # once, before the API and the worker both open it
    logs = settings.var_dir / "logs"
    procs = [_spawn(["worker"], logs / "worker.log"), _spawn(["api"], logs / "api.log")]
    base_url = f"http://{settings.api.host}:{settings.api.port}"

    def shutdown(*_: Any) -> None:
        typer.echo("stopping worker and API")
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if started_kafka:
            from hub.cli.kafka import run_script

            run_script("stop", env={"KAFKA_PORT": str(_port_of(settings.kafka.bootstrap))}, check=False)
        raise typer.Exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        _wait_healthy(base_url, 120, procs)
    except RuntimeError as exc:
        typer.echo(str(exc), err=True)
        shutdown()
    typer.echo(f"hub ready in {time.monotonic() - t0:.1f}s: API {base_url}  (docs {base_url}/docs)")
    typer.echo(f"logs: {logs}/worker.log, {logs}/api.log")
    if demo:
        run_demo(settings, base_url)
    typer.echo("press Ctrl-C to stop")
    while all(p.poll() is None for p in procs):
        time.sleep(1)
    typer.echo("a hub process exited; see the logs", err=True)
    shutdown()


def worker(
    role: str = typer.Option(
        "",
        "--role",
        help="which steps to run: all | routing (intake -> inboxes) | downstream (every other step); "
        "default HUB_WORKER__ROLE, else all",
    ),
) -> None:
    """Run the stream processors (faust worker); several share partitions through the consumer group."""
    if role and role not in WORKER_ROLES:
        raise typer.BadParameter(
            f"'{role}' is not a worker role; use one of {', '.join(WORKER_ROLES)}", param_hint="--role"
        )
    import importlib.util

    if importlib.util.find_spec("uvloop") is not None:  # a locked dependency; faust supports it
        import mode.loop

        mode.loop.use("uvloop")
    from hub.adapters.kafka import wait_for_group_coordinator
    from hub.bootstrap import build_worker
    from hub.cli.heap import tune_gc

    settings = load_settings()
    if role:
        settings.worker.role = cast(WorkerRole, role)  # checked against WORKER_ROLES above
    app = build_worker(settings)
    if not wait_for_group_coordinator(settings.kafka, app.conf.id):
        typer.echo(f"the broker cannot coordinate group {app.conf.id} yet; starting anyway", err=True)
    tune_gc(settings.tune_gc)
    make_worker(app, settings.worker.log_level).execute_from_commandline()


def make_worker(app: Any, log_level: str) -> Any:
    """The faust Worker that runs ``app``, logging JSON at ``log_level`` and nothing else.

    faust's start-up spinner sets the root logger to DEBUG (so that every record turns it) and adds
    a handler for it. Then every debug call in faust, mode and the hub builds a log record — faust
    logs one per record it sends — only for the handlers to drop it. A service has no terminal to
    spin: without the spinner the root logger keeps ``log_level``.
    """
    import faust

    from hub.observability import logging_config

    level = {"warn": "WARNING", "crit": "CRITICAL"}.get(log_level, log_level.upper())
    worker = faust.Worker(app, loglevel=log_level, logging_config=logging_config(level))
    worker.spinner = None
    return worker


def api() -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from hub.cli.heap import tune_gc

    settings = load_settings()
    from hub.observability import logging_config

    tune_gc(settings.tune_gc)
    uvicorn.run(
        "hub.bootstrap:api_factory",
        log_config=logging_config(),
        factory=True,
        host=settings.api.host,
        port=settings.api.port,
        log_level="warning",
        access_log=False,
    )


def demo_keys(settings: Settings) -> dict[str, str]:
    """API keys for the sample organisations, created once and kept in var/demo-keys.json (0600)."""
    from hub.adapters.apikey import ApiKeyStore
    from hub.bootstrap import build_engine

    path = settings.var_dir / "demo-keys.json"
    keys: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    store = ApiKeyStore(build_engine(settings))
    orgs = sorted({_sender(p) for p in _sample_files()} | {_addressed(p) for p in _sample_files()} - {""})
    for org in orgs:
        if org not in keys or store.authenticate(keys[org]) is None:
            keys[org] = store.create(org, label="demo")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keys, indent=2))
    os.chmod(path, 0o600)
    return keys


def _sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.json"))


def _bundle(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _sender(path: Path) -> str:
    from schemas.profile import ProfileError, validate_referral

    try:
        return validate_referral(_bundle(path)).sender_org
    except ProfileError:
        return ""


def _addressed(path: Path) -> str:
    from schemas.profile import ProfileError, validate_referral

    try:
        return validate_referral(_bundle(path)).facts.requested_recipient or ""
    except ProfileError:
        return ""


def run_demo(settings: Settings, base_url: str) -> None:
    from hub.adapters.sealing import open_or_initialise, sign_as

    keys = demo_keys(settings)
    store = open_or_initialise(settings.keys)
    posted = 0
    for path in _sample_files():
        sender = _sender(path)
        if not sender:
            continue
        body = path.read_bytes()
        headers = {
            "Authorization": f"Bearer {keys[sender]}",
            "Content-Type": "application/fhir+json",
            # Demo custody: the hub's key store holds the sample organisations' signing keys.
            "X-Qixin-Signature": sign_as(store, sender, body),
        }
        answer = httpx.post(f"{base_url}/v1/referrals", content=body, headers=headers, timeout=30)
        if answer.status_code == 202:
            posted += 1
            typer.echo(f"posted {path.name}: {answer.json()['referral_id']}")
        else:
            typer.echo(f"{path.name}: {answer.status_code} {answer.text[:300]}", err=True)
    typer.echo(f"demo: {posted} referral(s) posted; API keys in {settings.var_dir / 'demo-keys.json'}")
    for org, key in sorted(keys.items()):
        typer.echo(f"  {org:34} curl -H 'Authorization: Bearer {key}' {base_url}/v1/inbox")
    from hub.cli.users import create_demo_users

    typer.echo(
        f"demo users: sign in at {base_url}/login (passwords in {settings.var_dir / 'demo-users.json'})"
    )
    for username, password, org, role in create_demo_users(settings):
        typer.echo(f"  {username:20} {password:18} {role:17} {org}")


def demo() -> None:
    """Post the sample referrals to a running hub and print where to look."""
    settings = load_settings()
    run_demo(settings, f"http://{settings.api.host}:{settings.api.port}")


apikey_app = typer.Typer(help="Per-agency API keys for connectors.", no_args_is_help=True)


@apikey_app.command("create")
def apikey_create(org: str, label: str = "connector") -> None:
    """Create an API key for ORG; it is shown once."""
    from hub.adapters.apikey import ApiKeyStore
    from hub.bootstrap import build_engine

    typer.echo(ApiKeyStore(build_engine(load_settings())).create(org, label))


@apikey_app.command("disable")
def apikey_disable(org: str) -> None:
    """Disable every API key of ORG."""
    from hub.adapters.apikey import ApiKeyStore
    from hub.bootstrap import build_engine

    typer.echo(f"disabled {ApiKeyStore(build_engine(load_settings())).disable(org)} key(s)")


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(worker)
    app.command()(api)
    app.command()(demo)
    app.add_typer(apikey_app, name="apikey")
