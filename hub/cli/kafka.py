"""`hub kafka start|stop|status|logs`: the project-provisioned Apache Kafka broker (infra/kafka)."""

from __future__ import annotations

import subprocess

import typer

from hub.settings import REPO_ROOT

app = typer.Typer(
    help="Run the local Apache Kafka broker provisioned from Maven Central.", no_args_is_help=True
)

SCRIPT = REPO_ROOT / "infra" / "kafka" / "kafka.sh"


def run_script(*args: str, env: dict[str, str] | None = None, check: bool = True) -> int:
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], env=full_env, check=check).returncode


@app.command()
def start(
    brokers: int = typer.Option(1, help="1, or 3 for the fault-test cluster"),
    port: int = typer.Option(9092, envvar="KAFKA_PORT", help="client port of the first broker"),
) -> None:
    """Start the broker (fetching it first if needed); a second start is a no-op."""
    raise typer.Exit(
        run_script("start", "--brokers", str(brokers), env={"KAFKA_PORT": str(port)}, check=False)
    )


@app.command()
def stop(port: int = typer.Option(9092, envvar="KAFKA_PORT")) -> None:
    """Stop the broker(s) started by `hub kafka start`."""
    raise typer.Exit(run_script("stop", env={"KAFKA_PORT": str(port)}, check=False))


@app.command()
def status(port: int = typer.Option(9092, envvar="KAFKA_PORT")) -> None:
    """Say whether the local broker runs, with its pids and bootstrap address."""
    raise typer.Exit(run_script("status", env={"KAFKA_PORT": str(port)}, check=False))


@app.command()
def logs(follow: bool = typer.Option(False, "-f", "--follow")) -> None:
    """Show the broker log."""
    raise typer.Exit(run_script("logs", *(["-f"] if follow else []), check=False))


@app.command()
def fetch() -> None:
    """Download the broker jars from Maven Central into the ignored cache."""
    raise typer.Exit(run_script("fetch", check=False))
