"""`hub disclose --to ORG --purpose P BUNDLE`: show what ORG may see of a referral, and why (JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from hub.domain.consent import Disclosure, Recipient, decide
from hub.domain.disclosure import categorise
from hub.domain.error import HubError
from schemas.envelope import AgencyType
from schemas.policy import PolicyError, load_disclosure_policy
from schemas.profile import SHANGHAI, ProfileError, validate_referral

EXIT_INVALID = 1
EXIT_REFUSED = 3


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(EXIT_INVALID)


def _agency_type(org: str, to_type: str | None, directory: Path | None) -> str:
    if to_type:
        if to_type not in {a.value for a in AgencyType}:
            raise _fail(f"--to-type: unknown agency type {to_type!r}")
        return to_type
    from hub.adapters.directory import load_directory
    from hub.settings import load_settings

    path = directory or load_settings().rules.directory_file
    if not path.exists():
        raise _fail(f"no directory at {path}: pass --to-type")
    try:
        found = load_directory(path).type_of(org)
    except HubError as exc:
        raise _fail(f"{path}: {exc}; pass --to-type") from None
    if found is None:
        raise _fail(f"{org!r} is not in the directory {path}: pass --to-type")
    return found


def _when(at: str | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise _fail(f"--at: not an ISO 8601 time: {at!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=SHANGHAI)


def disclose(
    bundle: Path = typer.Argument(..., help="a referral-request Bundle (JSON)", show_default=False),
    to: str = typer.Option(..., "--to", help="recipient organisation id"),
    purpose: str = typer.Option(..., "--purpose", help="treatment, crisis-intervention, safeguarding, …"),
    basis: str | None = typer.Option(
        None, "--basis", help="consent | statutory | emergency (default: claimed)"
    ),
    to_type: str | None = typer.Option(None, "--to-type", help="recipient agency type (default: directory)"),
    categories: str | None = typer.Option(None, "--categories", help="comma-separated categories asked for"),
    reason: str | None = typer.Option(None, "--reason", help="break-glass reason (default: the Bundle's)"),
    at: str | None = typer.Option(None, "--at", help="decision time, ISO 8601 (default: now; local: +08:00)"),
    directory: Path | None = typer.Option(None, "--directory", help="directory YAML (default: settings)"),
    policy_file: Path | None = typer.Option(
        None, "--policy", help="disclosure policy YAML (default: shipped)"
    ),
    view: bool = typer.Option(True, "--view/--no-view", help="include the minimised Bundle"),
) -> None:
    """Print the decision as JSON. Exit 0 when disclosed, 3 when refused, 1 when the input is wrong."""
    when = _when(at)
    try:
        raw = bundle.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise _fail(f"{bundle}: {exc}") from None
    try:
        referral = validate_referral(data, size=len(raw), now=when)
    except ProfileError as exc:
        for issue in exc.issues:
            typer.echo(f"{bundle}: {issue.path} [{issue.rule}] {issue.message}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    try:
        policy = load_disclosure_policy(policy_file)
    except (OSError, PolicyError) as exc:
        raise _fail(str(exc)) from None
    decision = decide(
        referral.facts,
        categorise(referral.bundle, policy),
        recipient=Recipient(to, _agency_type(to, to_type, directory)),
        purpose=purpose,
        basis=basis or referral.facts.legal_basis_claimed,
        at=when,
        categories=[c.strip() for c in categories.split(",") if c.strip()] if categories else None,
        reason=reason,
    )
    out = decision.record()
    if isinstance(decision, Disclosure) and view:
        out["view"] = decision.view
    typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
    raise typer.Exit(0 if isinstance(decision, Disclosure) else EXIT_REFUSED)


def register(app: typer.Typer) -> None:
    app.command("disclose")(disclose)
