"""`hub kafka start|stop|status|logs|fetch`: the project-provisioned Apache Kafka broker (infra/kafka)."""

from __future__ import annotations

import os
import subprocess

import typer

from hub.settings import REPO_ROOT

app = typer.Typer(
    help="Run the local Apache Kafka broker provisioned from Maven Central.", no_args_is_help=True
)

SCRIPT = REPO_ROOT / "infra" / "kafka" / "kafka.sh"
PortOption = typer.Option(None, envvar="KAFKA_PORT", help="client port of the (first) broker")


def run_script(*args: str, env: dict[str, str] | None = None, check: bool = True) -> int:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], env=full_env, check=check).returncode


def _port_env(port: int | None) -> dict[str, str]:
    # Without a port the script picks its defaults: 9092 single node, 9192 for the 3-broker cluster.
    return {"KAFKA_PORT": str(port)} if port else {}


@app.command()
def start(
    brokers: int = typer.Option(1, help="1, or 3 for the fault-test cluster (RF 3, min ISR 2)"),
    node: int | None = typer.Option(None, help="restart one node of a 3-broker cluster"),
    port: int | None = PortOption,
) -> None:
    """Start the broker (fetching it first if needed); a second start is a no-op."""
    args = ["start", "--brokers", str(brokers)] + (["--node", str(node)] if node else [])
    raise typer.Exit(run_script(*args, env=_port_env(port), check=False))


@app.command()
def stop(
    node: int | None = typer.Option(None, help="stop one node only"), port: int | None = PortOption
) -> None:
    """Stop the broker(s) started by `hub kafka start`."""
    raise typer.Exit(
        run_script("stop", *(["--node", str(node)] if node else []), env=_port_env(port), check=False)
    )


@app.command()
def status(port: int | None = PortOption) -> None:
    """Say whether the local broker runs (exit 0), is degraded (4) or is stopped (3)."""
    raise typer.Exit(run_script("status", env=_port_env(port), check=False))


@app.command()
def logs(follow: bool = typer.Option(False, "-f", "--follow"), port: int | None = PortOption) -> None:
    """Show the broker log."""
    raise typer.Exit(run_script("logs", *(["-f"] if follow else []), env=_port_env(port), check=False))


@app.command()
def fetch() -> None:
    """Download the broker jars from Maven Central into the ignored cache."""
    raise typer.Exit(run_script("fetch", check=False))
