"""Worker roles: which stream steps each runs, and the consumer group each joins."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from hub.agents.app import group_id
from hub.settings import Settings

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_pipeline.py"


def _settings(tmp_path: Path, role: str) -> Settings:
    settings = Settings(var_dir=tmp_path / "var")
    settings.kafka.topic_prefix = "t1."
    settings.worker.metrics_port = 0
    settings.worker.role = role  # type: ignore[assignment]
    return settings


def test_each_role_is_a_consumer_group_of_its_own(tmp_path: Path) -> None:
    groups = {role: group_id(_settings(tmp_path, role)) for role in ("all", "routing", "downstream")}
    # "all" keeps the group a hub had before roles existed: upgrading does not re-read the topics.
    assert groups == {
        "all": "qixin-hub-t1",
        "routing": "qixin-hub-routing-t1",
        "downstream": "qixin-hub-downstream-t1",
    }


@pytest.mark.parametrize(
    ("role", "agents"),
    [
        ("routing", {"accept_inbound", "route_referrals"}),
        (
            "downstream",
            {
                "project_status_changes",
                "project_openings",
                "project_escalations",
                "project_follow_ups",
                "apply_consent_changes",
                "project_withdrawals",
                "chain_audit",
            },
        ),
    ],
)
def test_a_role_runs_its_steps_and_every_step_runs_in_one_role(
    tmp_path: Path, role: str, agents: set[str]
) -> None:
    from hub.bootstrap import build_worker

    def steps(role: str) -> set[str]:
        app = build_worker(_settings(tmp_path / role, role))
        return {agent.name.rsplit(".", 1)[-1] for agent in app.agents.values()}

    assert steps(role) == agents
    assert steps("routing") | steps("downstream") == steps("all")
    assert not steps("routing") & steps("downstream")


def test_an_unknown_role_is_refused_by_name() -> None:
    import typer

    from hub.cli import run

    app = typer.Typer()
    run.register(app)
    result = CliRunner().invoke(app, ["worker", "--role", "fast"])
    assert result.exit_code == 2
    assert "'fast' is not a worker role" in result.output


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pipeline_roles", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_starts_the_roles_it_is_given(bench: ModuleType) -> None:
    assert bench.parse_roles(None, None) == ["routing", "downstream"]  # the default layout
    assert bench.parse_roles(None, 2) == ["all", "all"]
    assert bench.parse_roles("routing, routing, downstream", None) == ["routing", "routing", "downstream"]
    with pytest.raises(SystemExit, match="'fast' is not a worker role"):
        bench.parse_roles("routing,fast", None)
    with pytest.raises(SystemExit, match="name both routing and downstream"):
        bench.parse_roles("routing,routing", None)  # nobody would chain the audit log
    with pytest.raises(SystemExit, match="not both"):
        bench.parse_roles("all", 2)


@pytest.mark.parametrize(
    ("role", "env", "expected"),
    [
        ("downstream", {}, (200, 1 << 20)),  # off the inbox's way: fewer, fuller fetches
        ("routing", {}, (1500, 1)),  # every record as it comes
        ("all", {}, (1500, 1)),
        ("downstream", {"HUB_WORKER__FETCH_MAX_WAIT_MS": "50", "HUB_WORKER__FETCH_MIN_BYTES": "1"}, (50, 1)),
    ],
)
def test_the_consumer_faust_builds_fetches_as_the_role_wants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role: str, env: dict[str, str], expected: tuple[int, int]
) -> None:
    import asyncio

    from hub.agents.app import make_app

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(var_dir=tmp_path / "var")
    settings.worker.role = role  # type: ignore[assignment]

    async def built() -> tuple[int, int]:
        app = make_app(settings)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        try:
            return consumer._fetch_max_wait_ms, consumer._fetch_min_bytes
        finally:
            await consumer.stop()  # never started: closes its client only

    assert asyncio.run(built()) == expected
