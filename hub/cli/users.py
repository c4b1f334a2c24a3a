"""`hub users add|disable|enable|reset-password|list`: staff accounts; and the demo's users."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer

from hub.domain.error import HubError
from hub.settings import Settings, load_settings

app = typer.Typer(help="Staff users (sign-in for the web pages).", no_args_is_help=True)

# Demo users: (username, organisation, role). Recipient staff of each sample recipient, the referrers
# of each sample sender, and the district office's monitor, auditor and admin.
DEMO_USERS: tuple[tuple[str, str, str], ...] = (
    ("mhc.clinician", "camhs-songjiang-mhc", "clinician"),
    ("mhc.supervisor", "camhs-songjiang-mhc", "supervisor"),
    ("mhc.referrer", "camhs-songjiang-mhc", "referrer"),
    ("no2.referrer", "school-songjiang-no2-middle", "referrer"),
    ("no2.caseworker", "school-songjiang-no2-middle", "case-worker"),
    ("police.caseworker", "police-songjiang", "case-worker"),
    ("police.referrer", "police-songjiang", "referrer"),
    ("centre.caseworker", "district-centre", "case-worker"),
    ("centre.referrer", "district-centre", "referrer"),
    ("centre.supervisor", "district-centre", "supervisor"),  # reviews the hotline's break-glass uses
    ("yueyang.caseworker", "street-centre-yueyang", "case-worker"),
    ("civil.referrer", "civil-affairs-songjiang", "referrer"),
    ("district.monitor", "district-office", "district-monitor"),
    ("district.auditor", "district-office", "auditor"),
    ("hub.admin", "district-office", "admin"),
)


def _identity(settings: Settings) -> Any:
    from datetime import timedelta

    from hub.adapters.clock import SystemClock
    from hub.adapters.db import make_engine
    from hub.adapters.user import (
        Argon2Hasher,
        SqlLoginAttempts,
        SqlSessionStore,
        SqlUserRepository,
        create_tables,
    )
    from hub.services.identity import IdentityService, SessionPolicy

    # Not hub.bootstrap: importing the whole composition root (faust, FHIR models) costs seconds.
    engine = make_engine(settings.resolved_database_url(), settings.database.echo)
    create_tables(engine)
    auth = settings.auth
    return IdentityService(
        SqlUserRepository(engine),
        SqlSessionStore(engine),
        SqlLoginAttempts(engine),
        Argon2Hasher(),
        SystemClock(),
        policy=SessionPolicy(
            idle=timedelta(minutes=auth.session_idle_minutes),
            absolute=timedelta(hours=auth.session_hours),
            max_failures=auth.login_max_failures,
            failure_window=timedelta(minutes=auth.login_window_minutes),
        ),
    )


def _password(password_stdin: bool) -> str | None:
    if not password_stdin:
        return None
    return sys.stdin.readline().rstrip("\n")


def _fail(exc: HubError) -> None:
    typer.echo(f"error: {exc.message} ({exc.code})", err=True)
    raise typer.Exit(1)


@app.command("add")
def add(
    username: str,
    org: str = typer.Option(..., "--org", help="Organisation id from the directory"),
    role: str = typer.Option(
        ...,
        "--role",
        help="clinician | case-worker | referrer | supervisor | district-monitor | auditor | admin",
    ),
    name: str = typer.Option("", "--name", help="Display name (shown in the pages; never in audit)"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin"),
) -> None:
    """Create a staff user; prints the initial password when one was generated."""
    try:
        user, password = _identity(load_settings()).add_user(
            username, org, role, name, _password(password_stdin)
        )
    except HubError as exc:
        _fail(exc)
        return
    typer.echo(f"created {user.username} ({user.role.value} at {user.org_id}), id {user.user_id}")
    if not password_stdin:
        typer.echo(f"initial password: {password}")


@app.command("import")
def import_users(
    source: typer.FileText = typer.Argument(
        ..., help="JSON lines: {username, org, role, name?, password?}; - for stdin"
    ),
) -> None:
    """Create many users at once (onboarding an agency); prints generated passwords."""
    identity = _identity(load_settings())
    failed = 0
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            user, password = identity.add_user(
                row["username"], row["org"], row["role"], row.get("name", ""), row.get("password")
            )
        except HubError as exc:
            failed += 1
            typer.echo(f"line {number}: {exc.message} ({exc.code})", err=True)
            continue
        except (ValueError, KeyError, TypeError) as exc:
            failed += 1
            typer.echo(f"line {number}: not a user record ({type(exc).__name__}: {exc})", err=True)
            continue
        shown = "" if row.get("password") else f" password {password}"
        typer.echo(f"created {user.username} ({user.role.value} at {user.org_id}){shown}")
    if failed:
        raise typer.Exit(1)


@app.command("disable")
def disable(username: str) -> None:
    """Disable a user and end their sessions."""
    try:
        user = _identity(load_settings()).disable(username)
    except HubError as exc:
        _fail(exc)
        return
    typer.echo(f"disabled {user.username}")


@app.command("enable")
def enable(username: str) -> None:
    """Enable a disabled user again."""
    try:
        user = _identity(load_settings()).enable(username)
    except HubError as exc:
        _fail(exc)
        return
    typer.echo(f"enabled {user.username}")


@app.command("reset-password")
def reset_password(
    username: str,
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the new password from stdin"),
) -> None:
    """Set a new password (generated unless given on stdin); ends the user's sessions."""
    try:
        user, password = _identity(load_settings()).reset_password(username, _password(password_stdin))
    except HubError as exc:
        _fail(exc)
        return
    typer.echo(f"password of {user.username} reset")
    if not password_stdin:
        typer.echo(f"new password: {password}")


@app.command("list")
def list_users(as_json: bool = typer.Option(False, "--json")) -> None:
    """All users (never their password hashes)."""
    from hub.services.identity import public_user

    identity = _identity(load_settings())
    users = identity.all_users()
    if as_json:
        typer.echo(json.dumps([public_user(u) for u in users], default=str, indent=2))
        return
    for u in users:
        flag = " (disabled)" if u.disabled else ""
        typer.echo(f"{u.username:24} {u.role.value:17} {u.org_id}{flag}")


def create_demo_users(settings: Settings) -> list[tuple[str, str, str, str]]:
    """Demo users for the sample organisations: (username, password, org, role).

    Passwords are generated once and kept in <var>/demo-users.json (0600); a user whose stored
    password no longer works (reset by hand) gets a fresh one.
    """
    identity = _identity(settings)
    path = settings.var_dir / "demo-users.json"
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    out: list[tuple[str, str, str, str]] = []
    for username, org, role in DEMO_USERS:
        user = identity.get(username)
        password = known.get(username)
        if user is None:
            user, password = identity.add_user(username, org, role, password=password)
        elif password is None or not identity.provider.authenticate(username, password):
            user, password = identity.reset_password(username)
        assert password is not None
        known[username] = password
        out.append((username, password, user.org_id, user.role.value))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(known, indent=2))
    os.chmod(path, 0o600)
    return out
