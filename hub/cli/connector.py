"""`hub connector <agency> import FILE | pull | listen`: agency systems' exports in, deliveries out.

Settings come from QIXIN_CONNECTOR_* (see connectors.common.settings.ConnectorSettings); the options
here override the agency id and the transport for one run. Exit status: 0 all sent, 2 some rows were
bad, held back or dead-lettered (the rest went through), 1 the run could not start.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import typer

from connectors.registry import AGENCIES

app = typer.Typer(
    help="Agency connectors: import native exports as signed referrals, pull deliveries back.",
    no_args_is_help=True,
)
T = TypeVar("T")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


def _guard(action: Callable[[], T]) -> T:
    """Known failures (config, keys, unreadable files, hub errors) as one line on stderr, exit 1."""
    from connectors.common.keys import KeyConfigError
    from connectors.common.table import TableError
    from connectors.common.transport import TransportFailed
    from hub.domain.error import HubError

    try:
        return action()
    except HubError as exc:
        raise _fail(f"{exc.code}: {exc.message}") from None
    except (KeyConfigError, TableError, TransportFailed, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None


@contextmanager
def _session(
    name: str,
    agency: str | None,
    transport: str | None,
    *,
    dry_run: bool = False,
    out_dir: Path | None = None,
) -> Iterator[tuple[Any, Any, Any]]:
    """(connector, run context, read context) with the transports open; closes them afterwards."""
    from connectors.common.agency import ReadContext
    from connectors.common.bundle import Org
    from connectors.common.directory import load_directory
    from connectors.common.keys import ConnectorKeys
    from connectors.common.outbox import Outbox
    from connectors.common.runner import Context
    from connectors.common.settings import ConnectorSettings
    from connectors.common.transport import HttpsTransport, KafkaTransport
    from connectors.common.value import SHANGHAI
    from connectors.registry import connector as load

    con = load(name)
    overrides: dict[str, Any] = {}
    if agency:
        overrides["agency"] = agency
    if transport:
        overrides["transport"] = transport
    settings = ConnectorSettings(**overrides)
    if not settings.agency:
        if con.default_org is None:
            raise _fail(f"set QIXIN_CONNECTOR_AGENCY (or --agency) to the {name}'s organisation id")
        settings.agency = con.default_org
    directory = load_directory()
    sender = (
        directory.org(settings.agency)
        if settings.agency in directory.entries
        else Org(settings.agency, con.agency_type)
    )
    if sender.type != con.agency_type:
        raise _fail(f"{settings.agency} is a {sender.type} in the directory, not a {con.agency_type}")
    keys = ConnectorKeys(settings)
    if con.needs_pseudonyms:
        keys.pseudonymiser  # noqa: B018  (fail now on missing keys, not as a bad row per record)
    outbox = None
    if not dry_run or settings.outbox_file().exists():
        outbox = Outbox(settings.outbox_file())
    https = kafka = None
    try:
        if not dry_run:
            signer = keys.signer
            if settings.transport == "kafka":
                kafka = KafkaTransport(settings, signer, keys.hub_registry)
            if settings.transport == "https" or settings.api_key is not None:
                https = HttpsTransport(settings, signer)
        ctx = Context(settings, sender, outbox, https=https, kafka=kafka, out_dir=out_dir)
        read_ctx = ReadContext(
            sender,
            directory,
            lambda raw, issuer: keys.pseudonymiser.pseudonym(raw, issuer=issuer),
            datetime.now(SHANGHAI).date(),
            settings.config_file,
            outbox,
        )
        yield con, ctx, read_ctx
    finally:
        for closing in (https, kafka, outbox):
            if closing is not None:
                closing.close()


def _emit(report: Any, as_json: bool, report_file: Path | None) -> int:
    document = report.as_dict()
    typer.echo(report.summary(), err=True)
    if report_file is not None:
        report_file.parent.mkdir(parents=True, exist_ok=True)
        report_file.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if as_json:
        sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    troubled = document.get("bad_rows") or document.get("dead_letters") or document.get("failed")
    return 2 if troubled else 0


def _agency_app(name: str, help_text: str) -> typer.Typer:
    sub = typer.Typer(help=help_text, no_args_is_help=True)

    @sub.command("import")
    def import_(
        file: Path = typer.Argument(..., exists=True, dir_okay=False, help="the native export"),
        dry_run: bool = typer.Option(False, "--dry-run", help="parse, map and validate; send nothing"),
        transport: str | None = typer.Option(None, "--transport", help="https | kafka (default: settings)"),
        kind: str = typer.Option("auto", "--kind", help="auto | referrals | status"),
        agency: str | None = typer.Option(
            None, "--agency", help="sender organisation id (default: settings)"
        ),
        out: Path | None = typer.Option(None, "--out", help="with --dry-run: write the Bundles here"),
        as_json: bool = typer.Option(False, "--json", help="print the full report as JSON on stdout"),
        report_file: Path | None = typer.Option(None, "--report", help="also write the JSON report here"),
    ) -> None:
        """Send the file's records to the hub (each record once, however often the file is run)."""
        if transport not in (None, "https", "kafka"):
            raise _fail("--transport is https or kafka")
        if kind not in ("auto", "referrals", "status"):
            raise _fail("--kind is auto, referrals or status")

        def run() -> int:
            from connectors.common.runner import run_import

            with _session(name, agency, transport, dry_run=dry_run, out_dir=out) as (con, ctx, read_ctx):
                parsed = con.read(file, read_ctx, kind)
                report = run_import(parsed, ctx, source=file.name, dry_run=dry_run)
                return _emit(report, as_json, report_file)

        raise typer.Exit(_guard(run))

    @sub.command()
    def pull(
        agency: str | None = typer.Option(
            None, "--agency", help="recipient organisation id (default: settings)"
        ),
        ack: bool | None = typer.Option(
            None, "--ack/--no-ack", help="acknowledge (received) what was handed over"
        ),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON on stdout"),
    ) -> None:
        """Hand new deliveries from the hub's inbox to the agency's system (the outbox folder)."""

        def run() -> int:
            from connectors.common.runner import run_pull

            with _session(name, agency, "https") as (con, ctx, _):
                folder = ctx.settings.his_dir()
                acknowledge = con.acknowledge_on_pull if ack is None else ack
                report = run_pull(ctx, con.handler(folder, ctx.sender), acknowledge=acknowledge)
                typer.echo(f"{report.summary()} -> {folder}", err=True)
                if as_json:
                    sys.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n")
                return 2 if report.failed else 0

        raise typer.Exit(_guard(run))

    if name == "hospital":

        @sub.command()
        def listen(
            host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
            port: int = typer.Option(2575, help="MLLP port"),
            agency: str | None = typer.Option(None, "--agency", help="hospital organisation id"),
        ) -> None:
            """Receive HL7 v2 over MLLP from the HIS, forward status changes to the hub, ACK each message."""

            def run() -> int:
                import asyncio

                from connectors.hospital.mllp import serve

                with _session(name, agency, "https") as (_, ctx, _read):
                    typer.echo(f"MLLP listening on {host}:{port} for {ctx.settings.agency}", err=True)
                    asyncio.run(serve(ctx, host, port))
                return 0

            raise typer.Exit(_guard(run))

    return sub


for _name, (_module, _help) in AGENCIES.items():
    app.add_typer(_agency_app(_name, _help), name=_name)


@app.command()
def keygen(
    out: Path = typer.Argument(..., help="where to write the new Ed25519 private key (PEM, mode 0600)"),
    agency: str = typer.Option(..., "--agency", help="the organisation the key signs for"),
) -> None:
    """Create a connector signing key; prints the directory entry to register its public half."""

    def run() -> None:
        from connectors.common.keys import write_signing_key

        kid, public = write_signing_key(out)
        typer.echo(f"wrote {out}; register it in the directory under {agency}:")
        typer.echo(f"    public_keys:\n      - {{kid: {kid}, use: sign, alg: Ed25519, key: {public}}}")
        typer.echo(f"then set QIXIN_CONNECTOR_SIGNING_KEY_FILE={out}")

    _guard(run)
