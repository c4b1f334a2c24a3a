"""`hub deadletters list|show|replay`: what a stream step could not process, and replay after a fix."""

from __future__ import annotations

import json

import typer

from hub.settings import load_settings

app = typer.Typer(
    help="Dead letters: records a step could not process, with their reason.", no_args_is_help=True
)


def _admin():  # type: ignore[no-untyped-def]
    from hub.adapters.deadletter import DeadLetterAdmin
    from hub.bootstrap import build_engine

    settings = load_settings()
    return DeadLetterAdmin(settings, build_engine(settings))


@app.command("list")
def list_cmd(
    reason: str | None = typer.Option(None, help="only this reason code"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every dead letter, oldest first: id, step, reason code, source position, replayed or not."""
    admin = _admin()
    replayed = admin.replayed()
    rows = [d for d in admin.all() if reason is None or d.reason_code == reason]
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {**d.model_dump(mode="json", exclude={"original"}), "replayed": d.event_id in replayed}
                    for d in rows
                ],
                indent=2,
            )
        )
        return
    for d in rows:
        mark = "replayed" if d.event_id in replayed else "open"
        typer.echo(
            f"{d.event_id[:8]}  {d.at:%Y-%m-%d %H:%M:%S}  {d.step:24} {d.reason_code:26} "
            f"{d.source_topic}[{d.partition}]@{d.offset}  {mark}"
        )
    typer.echo(f"{len(rows)} dead letter(s), {sum(d.event_id in replayed for d in rows)} replayed")


@app.command()
def show(event_id: str) -> None:
    """One dead letter in full (the original stays sealed: its size is shown, not its bytes)."""
    dead = _admin().get(event_id)
    body = dead.model_dump(mode="json", exclude={"original"})
    body["original_bytes"] = len(dead.original) * 3 // 4
    typer.echo(json.dumps(body, indent=2, ensure_ascii=False))


@app.command()
def replay(
    event_id: str | None = typer.Argument(None, help="a dead letter id (or its first characters)"),
    reason: str | None = typer.Option(None, help="replay every open dead letter with this reason code"),
) -> None:
    """Produce the original record(s) to the source topic again, once each."""
    from hub.domain.error import HubError

    admin = _admin()
    if event_id:
        targets = [admin.get(event_id)]
    elif reason:
        done = admin.replayed()
        targets = [d for d in admin.all() if d.reason_code == reason and d.event_id not in done]
    else:
        typer.echo("give a dead letter id or --reason CODE", err=True)
        raise typer.Exit(2)
    failed = 0
    for dead in targets:
        try:
            admin.replay(dead)
            typer.echo(f"replayed {dead.event_id} -> {dead.source_topic}")
        except HubError as exc:
            failed += 1
            typer.echo(f"{dead.event_id}: {exc.message}", err=True)
    raise typer.Exit(1 if failed else 0)
