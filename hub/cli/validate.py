"""`hub validate FILE…`: check message Bundles against the Qixin profile and print every issue."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from schemas.profile import ProfileError, validate_message


def validate(
    files: list[Path] = typer.Argument(..., help="FHIR message Bundles (JSON)", show_default=False),
) -> None:
    """Print "FILE: valid", or each issue as "FILE: PATH [rule] message"; exit 1 if any file is invalid."""
    invalid = 0
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            typer.echo(f"{path}: $ [unreadable] {exc.strerror}")
            invalid += 1
            continue
        try:
            data = json.loads(raw)
        except ValueError as exc:
            typer.echo(f"{path}: $ [json] {exc}")
            invalid += 1
            continue
        try:
            validate_message(data, size=len(raw))
        except ProfileError as exc:
            invalid += 1
            for issue in exc.issues:
                typer.echo(f"{path}: {issue.path} [{issue.rule}] {issue.message}")
            continue
        typer.echo(f"{path}: valid")
    raise typer.Exit(1 if invalid else 0)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
