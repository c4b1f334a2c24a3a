"""`hub audit verify|search|checkpoint`: check the hash-chained audit log and answer auditors' questions."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typer

from hub.domain.error import HubError
from hub.services.audit import AuditQueries, AuditSearch
from hub.settings import Settings, load_settings
from schemas.audit import AuditType

app = typer.Typer(
    help="Audit trail: verify the hash chain and its signed checkpoints, search events.",
    no_args_is_help=True,
)

SHOWN_TZ = ZoneInfo("Asia/Shanghai")


def _engine(settings: Settings) -> Any:
    # Not bootstrap.build_engine: that pulls in faust and FastAPI, seconds of start-up for a CLI call.
    # Importing the store registers its tables before the schema is created.
    from hub.adapters import auditstore  # noqa: F401
    from hub.adapters.db import create_schema, make_engine

    engine = make_engine(settings.resolved_database_url(), settings.database.echo)
    create_schema(engine)
    return engine


def _queries(settings: Settings, public_keys: Path | None) -> AuditQueries:
    from hub.adapters.auditstore import SqlAuditStore
    from hub.adapters.crypto import Ed25519Verifier, PublicKeyRegistry
    from hub.adapters.keystore import KeyStore
    from hub.services.audit import hub_signature_check

    if public_keys is not None:
        registry = PublicKeyRegistry.from_export(json.loads(public_keys.read_text(encoding="utf-8")))
    else:
        try:
            registry = KeyStore.open(settings.keys).public_registry()
        except HubError as exc:
            typer.secho(
                f"note: {exc.message}; checkpoints cannot be checked without the hub's public key "
                "(pass --public-keys FILE from `hub keys export-public`)",
                err=True,
                fg=typer.colors.YELLOW,
            )
            registry = PublicKeyRegistry()
    store = SqlAuditStore(_engine(settings))
    return AuditQueries(store, hub_signature_check(Ed25519Verifier(registry)))


def _time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint=option) from None
    # District staff type local times; an explicit offset wins.
    return value.replace(tzinfo=SHOWN_TZ) if value.tzinfo is None else value


@app.command()
def verify(
    public_keys: Path | None = typer.Option(
        None, "--public-keys", help="verify checkpoints with this `hub keys export-public` file"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Recompute the hash chain and check the signed checkpoints; exit 1 naming every problem."""
    report = _queries(load_settings(), public_keys).verify()
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        for problem in report.problems:
            typer.echo(str(problem))
        typer.echo(report.summary())
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def search(
    referral: str | None = typer.Option(None, "--referral", help="referral id"),
    agency: str | None = typer.Option(None, "--agency", help="organisation id (acting or involved)"),
    since: str | None = typer.Option(None, "--since", help="ISO time, inclusive (local if no offset)"),
    until: str | None = typer.Option(None, "--until", help="ISO time, exclusive (local if no offset)"),
    type_: AuditType | None = typer.Option(None, "--type", help="event type"),
    limit: int = typer.Option(100, "--limit", min=1, max=500),
    after: int = typer.Option(0, "--after", help="continue after this seq (from the previous page)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Audit events in chain order, filtered by referral, agency, period and type."""
    query = AuditSearch(
        referral_id=referral,
        agency=agency,
        since=_time(since, "--since"),
        until=_time(until, "--until"),
        type=type_,
        after_seq=after,
        limit=limit,
    )
    try:
        page = _queries(load_settings(), None).search(query)
    except HubError as exc:
        typer.secho(f"error {exc.code}: {exc.message}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"items": page.items, "next_after": page.next_after}, ensure_ascii=False))
        return
    for item in page.items:
        typer.echo(_line(item))
    if not page.items:
        typer.echo("no audit events match", err=True)
    if page.next_after is not None:
        typer.echo(f"more: --after {page.next_after}", err=True)


def _line(item: dict[str, Any]) -> str:
    e = item["event"]
    agent, entity, outcome = e["agent"], e.get("entity", {}), e.get("outcome", {})
    shown = datetime.fromisoformat(e["recorded"]).astimezone(SHOWN_TZ).strftime("%Y-%m-%d %H:%M:%S")
    who = "/".join(x for x in (agent["org_id"], agent.get("role"), agent.get("user_id")) if x)
    what = " ".join(
        f"{k}={entity[k]}"
        for k in ("referral_id", "task_id", "org_id", "from_status", "to_status", "key_id", "detail")
        if entity.get(k)
    )
    why = "/".join(x for x in (e.get("purpose"), e.get("legal_basis")) if x)
    result = outcome.get("code", "success") + (f":{outcome['reason']}" if outcome.get("reason") else "")
    return f"{item['seq']:>7}  {shown}  {e['type']:<14} {e['action']} {result:<8} {who:<40} {what} {why}"


@app.command()
def checkpoint() -> None:
    """Sign a checkpoint of the current head now (the worker does it every few seconds anyway)."""
    from hub.adapters.auditstore import SqlAuditStore
    from hub.adapters.clock import SystemClock
    from hub.adapters.keystore import KeyStore
    from hub.services.audit import AppendToChain

    settings = load_settings()
    try:
        signer = KeyStore.open(settings.keys).signer()
        made = AppendToChain(SqlAuditStore(_engine(settings)), signer, SystemClock()).checkpoint()
    except HubError as exc:  # no key store, or a broken chain the hub refuses to seal
        typer.secho(f"error {exc.code}: {exc.message}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    if made is None:
        typer.echo("nothing new to seal: the newest checkpoint covers the head")
    else:
        typer.echo(f"checkpoint {made.number}: seq {made.seq} head {made.head_hash} key {made.key_id}")
