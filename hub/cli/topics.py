"""`hub topics apply|list`: the topic catalogue (schemas/topic.py) applied idempotently."""

from __future__ import annotations

import typer

from hub.settings import load_settings
from schemas.topic import ALL_TOPICS

app = typer.Typer(help="Kafka topics declared in one place.", no_args_is_help=True)


@app.command("apply")
def apply_cmd() -> None:
    """Create missing topics and align the configuration of existing ones."""
    from hub.adapters.kafka import apply_topics

    settings = load_settings()
    for result in apply_topics(settings.kafka):
        verb = "created" if result.created else "exists "
        typer.echo(f"{verb} {result.name} ({result.partitions} partitions)")


@app.command("list")
def list_cmd() -> None:
    """Print the catalogue."""
    settings = load_settings()
    for spec in ALL_TOPICS:
        days = spec.retention_ms // 86_400_000
        typer.echo(f"{settings.topic(spec.name):28} retention {days:>5} d  {spec.description}")
