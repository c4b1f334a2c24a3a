"""`hub keys init|generate|rotate|export-public|list`: the key store under HUB_KEYS__STORE_DIR."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

from hub.adapters.keystore import KeyStore
from hub.domain.error import HubError
from hub.services.crypto_port import HUB_OWNER, KeyInfo, KeyKind
from hub.settings import load_settings

app = typer.Typer(
    help="Keys: sealing (x25519), signing (ed25519) and pseudonym (hmac) keys, with rotation.",
    no_args_is_help=True,
)

T = TypeVar("T")

OWNER_HELP = "organisation id, or 'hub' for the hub's own keys"


def _guard(action: Callable[[], T]) -> T:
    """Print a HubError as `code: message` on stderr and exit 1, instead of a traceback."""
    try:
        return action()
    except HubError as exc:
        typer.secho(f"error {exc.code}: {exc.message}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None


def _store() -> KeyStore:
    return _guard(lambda: KeyStore.open(load_settings().keys))


def _line(info: KeyInfo) -> str:
    retired = f"  retired {info.retired.isoformat()}" if info.retired else ""
    return (
        f"{info.owner:<24} {info.kind.value:<8} {info.key_id}  {info.status.value:<7} "
        f"created {info.created.isoformat()}{retired}"
    )


def _audit(owner: str, kind: KeyKind, key_id: str, action: str) -> None:
    from datetime import UTC, datetime

    from hub.cli.auditlog import publish
    from hub.services.auditing import key_change_event

    publish(key_change_event(owner, kind.value, key_id, action, datetime.now(UTC)))


@app.command()
def init(
    owner: str = typer.Option(HUB_OWNER, help="whose three keys (x25519, ed25519, hmac) to create"),
) -> None:
    """Create the key store and the owner's keys; writes a master key file if none is configured."""
    result = _guard(lambda: KeyStore.initialise(load_settings().keys, owner=owner))
    if result.master_key_written:
        typer.echo(
            f"wrote a new master key to {result.master_key_written} (mode 0600). Keep it apart from the "
            "store in production: set HUB_KEYS__MASTER_KEY or HUB_KEYS__MASTER_KEY_FILE."
        )
    verb = "created" if result.created_store else "opened"
    typer.echo(f"{verb} key store {result.store_dir}")
    for info in result.keys:
        typer.echo(_line(info))


@app.command()
def generate(
    kind: KeyKind = typer.Option(..., help="x25519 (sealing), ed25519 (signing) or hmac (pseudonyms)"),
    owner: str = typer.Option(HUB_OWNER, help=OWNER_HELP),
) -> None:
    """Create the owner's first active key of a kind (refuses if one is active: use rotate)."""
    store = _store()
    info = _guard(lambda: store.generate(owner, kind))
    typer.echo(_line(info))
    _audit(owner, kind, info.key_id, "generated")


@app.command()
def rotate(
    kind: KeyKind = typer.Option(..., help="x25519, ed25519 or hmac"),
    owner: str = typer.Option(HUB_OWNER, help=OWNER_HELP),
) -> None:
    """New active key; the old one is retired but still opens, verifies and links old data."""
    store = _store()
    new, retired = _guard(lambda: store.rotate(owner, kind))
    typer.echo(_line(new))
    typer.echo(_line(retired))
    _audit(owner, kind, new.key_id, "rotated")
    if kind != KeyKind.HMAC:
        typer.echo("publish the new public key to the directory: hub keys export-public --owner " + owner)


@app.command("export-public")
def export_public(
    owner: str | None = typer.Option(None, help="only this owner's keys (default: every owner)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write here instead of stdout"),
) -> None:
    """Public keys as JSON (key id, kind, status, base64url raw key); HMAC keys are never exported."""
    store = _store()
    document = _guard(lambda: store.export_public(owner))
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {len(document['keys'])} public keys to {output}")


@app.command("list")
def list_keys(owner: str | None = typer.Option(None, help="only this owner's keys")) -> None:
    """Every key with its id, kind, status and dates (never key material)."""
    store = _store()
    infos = _guard(lambda: store.list_keys(owner))
    if not infos:
        typer.echo("no keys")
    for info in infos:
        typer.echo(_line(info))
