"""`hub directory list|show|import`: the organisation directory, from the database or the YAML file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from hub.adapters.db import make_engine
from hub.adapters.directory import DirectoryInvalid, SqlDirectoryRepository, load_directory
from hub.domain.directory import Directory, organisation_as_dict
from hub.settings import Settings, load_settings

app = typer.Typer(help="The organisation directory: list, show, import.", no_args_is_help=True)

Source = Literal["auto", "db", "yaml"]
SourceOpt = Annotated[
    str, typer.Option("--source", help="auto (database if it holds a directory, else YAML), db or yaml")
]
FileOpt = Annotated[
    Path | None, typer.Option("--file", "-f", help="directory YAML (default: the configured one)")
]


def _db_url(settings: Settings) -> str | None:
    """The database URL, or None when only the embedded default exists and was never created."""
    configured = settings.database_url or settings.database.url
    if configured:
        return configured
    default = settings.var_dir / "hub.db"
    return f"sqlite:///{default}" if default.exists() else None


def _from_yaml(path: Path) -> Directory:
    try:
        return load_directory(path)
    except DirectoryInvalid as exc:
        for issue in exc.issues:
            typer.echo(str(issue))
        raise typer.Exit(1) from exc


def _open(source: str, file: Path | None) -> tuple[Directory, str]:
    settings = load_settings()
    if source not in ("auto", "db", "yaml"):
        typer.echo(f"unknown source {source!r}: use auto, db or yaml", err=True)
        raise typer.Exit(2)
    yaml_path = file or settings.rules.directory_file
    if source == "yaml" or file is not None:
        return _from_yaml(yaml_path), str(yaml_path)
    url = _db_url(settings)
    if url is not None:
        stored = SqlDirectoryRepository(make_engine(url)).load()
        if stored is not None:
            return stored, "database"
    if source == "db":
        typer.echo("no directory in the database: run `hub directory import FILE` first", err=True)
        raise typer.Exit(1)
    return _from_yaml(yaml_path), str(yaml_path)


@app.command("list")
def list_orgs(
    agency: Annotated[str | None, typer.Option("--type", "-t", help="only this agency type")] = None,
    town: Annotated[
        str | None, typer.Option("--town", help="only organisations serving this town code")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
    source: SourceOpt = "auto",
    file: FileOpt = None,
) -> None:
    """List organisations (id, type, towns, names)."""
    directory, origin = _open(source, file)
    orgs = [
        o
        for o in directory.organisations
        if (agency is None or o.type == agency) and (town is None or o.serves(town))
    ]
    if as_json:
        typer.echo(json.dumps([organisation_as_dict(o) for o in orgs], ensure_ascii=False, indent=2))
        return
    typer.echo(
        f"# {len(orgs)} of {len(directory.organisations)} organisations from {origin} ({directory.version})"
    )
    for o in orgs:
        towns = "all" if o.district_wide and not o.towns else ",".join(o.towns)
        flag = "" if o.active else " [inactive]"
        typer.echo(f"{o.id:34} {o.type:16} {towns:20} {o.name_zh} / {o.name_en}{flag}")


@app.command()
def show(
    org_id: Annotated[str, typer.Argument(help="organisation id")],
    source: SourceOpt = "auto",
    file: FileOpt = None,
) -> None:
    """Show one organisation as JSON (names, towns, queues, keys, escalation, on-duty rota)."""
    directory, _ = _open(source, file)
    org = directory.get(org_id)
    if org is None:
        typer.echo(f"no organisation {org_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(organisation_as_dict(org), ensure_ascii=False, indent=2))


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="directory YAML to load into the database")],
) -> None:
    """Validate the YAML and replace the directory in the database with it, in one transaction."""
    directory = _from_yaml(file)
    settings = load_settings()
    repo = SqlDirectoryRepository(make_engine(settings.resolved_database_url()))
    result = repo.replace(directory, source=str(file))
    typer.echo(
        f"imported {result.organisations} organisations and {result.towns} towns; "
        f"version {result.version} (was {result.previous_version or 'empty'})"
    )
