"""Staff users for tests: created with the real `hub users add` CLI, signed in over the real API."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.support.hub import RunningHub
from tests.support.servers import REPO

PASSWORD = "test-password-0123"


def add_user(hub: RunningHub, username: str, org: str, role: str, password: str = PASSWORD) -> str:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hub",
            "users",
            "add",
            username,
            "--org",
            org,
            "--role",
            role,
            "--password-stdin",
        ],
        input=password + "\n",
        env=hub.env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return password


def add_users(hub: RunningHub, users: list[tuple[str, str, str]], password: str = PASSWORD) -> None:
    """Several (username, org, role) at once with `hub users import -` (one process start)."""
    lines = "".join(
        json.dumps({"username": u, "org": o, "role": r, "password": password}) + "\n" for u, o, r in users
    )
    subprocess.run(
        [sys.executable, "-m", "hub", "users", "import", "-"],
        input=lines,
        env=hub.env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )


def staff_client(hub: RunningHub, username: str, password: str = PASSWORD) -> httpx.Client:
    """A client holding the session cookie and sending the session's CSRF token on every request."""
    client = httpx.Client(base_url=hub.base_url, timeout=30)
    answer = client.post("/v1/auth/login", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
    return client
