"""Every role against every endpoint, on the real hub: who may, who may not, and agency isolation.

A referral goes from a school to the CAMHS clinic. Staff of the school and the clinic are parties to
it; the police case worker belongs to another agency and must see nothing of it; the district
monitor sees aggregates only; the auditor the audit trail only; the admin only user administration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.hub import RunningHub, sample, with_new_message_id
from tests.support.staff import add_users, staff_client

SCHOOL = "school-songjiang-no2-middle"
CAMHS = "camhs-songjiang-mhc"
POLICE = "police-songjiang"

# role -> (username, organisation); "system" is the organisation's API key, not a user
ACTORS: dict[str, tuple[str, str]] = {
    "system": ("", CAMHS),
    "system-sender": ("", SCHOOL),
    "clinician": ("m.clinician", CAMHS),
    "case-worker": ("p.caseworker", POLICE),
    "referrer": ("s.referrer", SCHOOL),
    "supervisor": ("m.supervisor", CAMHS),
    "district-monitor": ("d.monitor", "district-office"),
    "auditor": ("d.auditor", "district-office"),
    "admin": ("d.admin", "district-office"),
}


@dataclass
class World:
    hub: RunningHub
    referral_id: str
    task_id: str
    clients: dict[str, httpx.Client]


@pytest.fixture(scope="module")
def world(hub: RunningHub) -> Iterator[World]:
    clients: dict[str, httpx.Client] = {}
    add_users(hub, [(u, o, a) for a, (u, o) in ACTORS.items() if not a.startswith("system")])
    for actor, (username, org) in ACTORS.items():
        clients[actor] = hub.client(org) if actor.startswith("system") else staff_client(hub, username)
    answer = hub.submit(SCHOOL, with_new_message_id(sample("referral-school-camhs-high.json")))
    assert answer.status_code == 202, answer.text
    referral_id = answer.json()["referral_id"]
    [item] = hub.wait_inbox(CAMHS, referral_id)
    try:
        yield World(hub, referral_id, item["task_id"], clients)
    finally:
        for c in clients.values():
            c.close()


def _submit(w: World, client: httpx.Client, actor: str) -> httpx.Response:
    body = json.dumps(
        with_new_message_id(sample("referral-school-camhs-high.json")), ensure_ascii=False
    ).encode()
    headers = {"Content-Type": "application/fhir+json", "X-Qixin-Signature": w.hub.sign(SCHOOL, body)}
    return client.post("/v1/referrals", content=body, headers=headers)


# endpoint name -> callable(world, client, actor) -> response
ENDPOINTS: dict[str, Any] = {
    "submit": _submit,
    "inbox": lambda w, c, a: c.get("/v1/inbox"),
    "sent": lambda w, c, a: c.get("/v1/referrals"),
    "referral": lambda w, c, a: c.get(f"/v1/referrals/{w.referral_id}"),
    "content": lambda w, c, a: c.get(f"/v1/tasks/{w.task_id}/content"),
    # An illegal move: allowed callers pass authorisation and meet the lifecycle (409).
    "transition": lambda w, c, a: c.post(f"/v1/tasks/{w.task_id}/status", json={"status": "completed"}),
    "metrics": lambda w, c, a: c.get("/v1/dashboard/metrics"),
    "escalations": lambda w, c, a: c.get("/v1/escalations"),
    "follow-ups": lambda w, c, a: c.get("/v1/follow-ups"),
    # No such follow-up: authorised callers get 404 from the use case, the others 403 before it.
    "follow-up-done": lambda w, c, a: c.post("/v1/follow-ups/fu-none/done", json={"outcome": "visited"}),
    "directory": lambda w, c, a: c.get("/v1/directory", params={"type": "camhs"}),
    "audit-search": lambda w, c, a: c.get("/v1/audit/events"),
    "audit-verify": lambda w, c, a: c.get("/v1/audit/verify"),
    "users": lambda w, c, a: c.get("/v1/users"),
    "consent": lambda w, c, a: c.post("/v1/consents", json={}),
    "break-glass": lambda w, c, a: c.get("/v1/break-glass"),
    # No such disclosure: supervisors get 404 from the use case, the others 403 before it.
    "break-glass-review": lambda w, c, a: c.post(
        "/v1/break-glass/dl-none/review", json={"outcome": "justified", "guardian_notice": "informed"}
    ),
    "me": lambda w, c, a: c.get("/v1/auth/me"),
}

OK, DENIED, HIDDEN = 200, 403, 404
# Expected status per (endpoint, actor). 202: accepted submission; 409: authorised, illegal move;
# 422: authorised, body incomplete (consent stub validates before its 501).
MATRIX: dict[str, dict[str, int]] = {
    "submit": {
        "system": DENIED,
        "system-sender": 202,
        "clinician": DENIED,
        "case-worker": DENIED,
        "referrer": 202,
        "supervisor": DENIED,
        "district-monitor": DENIED,
        "auditor": DENIED,
        "admin": DENIED,
    },
    "inbox": {
        "system": OK,
        "system-sender": OK,
        "clinician": OK,
        "case-worker": OK,
        "referrer": DENIED,
        "supervisor": OK,
        "district-monitor": DENIED,
        "auditor": DENIED,
        "admin": DENIED,
    },
    "sent": {
        "system": OK,
        "system-sender": OK,
        "clinician": DENIED,
        "case-worker": DENIED,
        "referrer": OK,
        "supervisor": OK,
        "district-monitor": DENIED,
        "auditor": DENIED,
        "admin": DENIED,
    },
    "referral": {
        "system": OK,
        "system-sender": OK,
        "clinician": OK,
        "case-worker": HIDDEN,
        "referrer": OK,
        "supervisor": OK,
        "district-monitor": DENIED,
        "auditor": DENIED,
        "admin": DENIED,
    },
    "content": {
        "system": OK,
        "system-sender": HIDDEN,
        "clinician": OK,
        "case-worker": HIDDEN,
        "referrer": DENIED,
        "supervisor": OK,
        "district-monitor": DENIED,
        "auditor": DENIED,
        "admin": DENIED,
    },
    "transition": {
        "system": 409,
        "system-sender": 409,
        "clinician": 409,
        "case-worker": HIDDEN,
        "referrer": 409,
        "supervisor": 409,
        "district-monitor": DENIED,
        "auditor": DENIED,
        "admin": DENIED,
    },
    "metrics": {
        "system": DENIED,
        "system-sender": DENIED,
        "clinician": DENIED,
        "case-worker": DENIED,
        "referrer": DENIED,
        "supervisor": OK,
        "district-monitor": OK,
        "auditor": DENIED,
        "admin": DENIED,
    },
    # SLA reminders concern the agency's own queue: recipient staff and supervisors.
    "escalations": {
        "system": OK,
        "system-sender": OK,
        "clinician": OK,
        "case-worker": OK,
        "referrer": DENIED,
        "supervisor": OK,
        "district-monitor": DENIED,
        "auditor": DENIED,
        "admin": DENIED,
    },
    "follow-ups": {a: (DENIED if a in ("district-monitor", "auditor", "admin") else OK) for a in ACTORS},
    "follow-up-done": {
        a: (DENIED if a in ("district-monitor", "auditor", "admin") else HIDDEN) for a in ACTORS
    },
    "directory": {a: OK for a in ACTORS},
    "audit-search": {a: (OK if a == "auditor" else DENIED) for a in ACTORS},
    "audit-verify": {a: (OK if a == "auditor" else DENIED) for a in ACTORS},
    "users": {a: (OK if a == "admin" else DENIED) for a in ACTORS},
    "consent": {a: (422 if a in ("system", "system-sender", "referrer") else DENIED) for a in ACTORS},
    "me": {a: OK for a in ACTORS},
    # Supervisors review the emergency disclosures their own agency asked for (DESIGN §3).
    "break-glass": {a: (OK if a == "supervisor" else DENIED) for a in ACTORS},
    "break-glass-review": {a: (HIDDEN if a == "supervisor" else DENIED) for a in ACTORS},
}
CASES = [(endpoint, actor) for endpoint in MATRIX for actor in ACTORS]


@pytest.mark.parametrize(("endpoint", "actor"), CASES, ids=[f"{e}-{a}" for e, a in CASES])
def test_role_endpoint_matrix(world: World, endpoint: str, actor: str) -> None:
    answer = ENDPOINTS[endpoint](world, world.clients[actor], actor)
    expected = MATRIX[endpoint][actor]
    assert answer.status_code == expected, f"{endpoint} as {actor}: {answer.status_code} {answer.text[:300]}"
    if expected >= 400:
        assert answer.headers["content-type"].startswith("application/problem+json")
    if expected == DENIED:
        # Denied by role, or (a clinic's key posting a school's referral) by agency.
        assert answer.json()["code"] in ("role-forbidden", "sender-mismatch")


def test_every_role_is_denied_somewhere() -> None:
    for actor in ACTORS:
        assert any(MATRIX[e][actor] in (DENIED, HIDDEN) for e in MATRIX), actor


def test_no_endpoint_is_missing_from_the_matrix(world: World) -> None:
    paths = set(httpx.get(f"{world.hub.base_url}/openapi.json").json()["paths"])
    covered = {
        "/v1/referrals",
        "/v1/inbox",
        "/v1/referrals/{referral_id}",
        "/v1/tasks/{task_id}/content",
        "/v1/tasks/{task_id}/status",
        "/v1/dashboard/metrics",
        "/v1/escalations",
        "/v1/directory",
        "/v1/audit/events",
        "/v1/audit/verify",
        "/v1/users",
        "/v1/consents",
        "/v1/auth/me",
        "/v1/follow-ups",
        "/v1/follow-ups/{followup_id}/done",
        "/v1/break-glass",
        "/v1/break-glass/{delivery_id}/review",
        # covered elsewhere: login/logout (test_problem_details)
        "/v1/auth/login",
        "/v1/auth/logout",
        "/healthz",
    }
    assert paths <= covered, f"endpoints without an authorisation case: {sorted(paths - covered)}"


def test_unauthenticated_is_401_everywhere_but_health(world: World) -> None:
    anonymous = httpx.Client(base_url=world.hub.base_url, timeout=30)
    for endpoint in MATRIX:
        answer = ENDPOINTS[endpoint](world, anonymous, "anonymous")
        assert answer.status_code == 401, endpoint
        assert answer.headers["www-authenticate"] == "Bearer"


def test_the_monitor_sees_aggregates_without_ids(world: World) -> None:
    body = world.clients["district-monitor"].get("/v1/dashboard/metrics", params={"by": "town"}).text
    assert world.referral_id not in body
    assert world.task_id not in body
    assert "psn:" not in body


def test_a_supervisor_sees_only_flows_of_their_agency(world: World) -> None:
    report = world.clients["supervisor"].get("/v1/dashboard/metrics", params={"by": "pair"}).json()
    assert report["scope"] == CAMHS
    for group in report["groups"]:
        assert CAMHS in group["key"]


def test_the_auditor_reads_no_clinical_content(world: World) -> None:
    auditor = world.clients["auditor"]
    assert auditor.get(f"/v1/referrals/{world.referral_id}").status_code == DENIED
    assert auditor.get(f"/v1/tasks/{world.task_id}/content").status_code == DENIED
    assert auditor.get("/v1/inbox").status_code == DENIED


def test_pages_follow_the_same_rules(world: World) -> None:
    pages = {
        "/worklist": {"clinician", "case-worker", "supervisor"},
        "/referrals": {"referrer", "supervisor"},
        "/dashboard": {"district-monitor", "supervisor"},
        "/escalations": {"supervisor"},
        "/break-glass": {"supervisor"},
        "/audit": {"auditor"},
        "/admin/users": {"admin"},
    }
    for path, allowed in pages.items():
        for actor, client in world.clients.items():
            if actor.startswith("system"):
                # A connector's API key opens no page: pages are for signed-in staff.
                answer = client.get(path, follow_redirects=False)
                assert answer.status_code == 303, path
                assert answer.headers["location"].startswith("/login"), path
                continue
            answer = client.get(path, follow_redirects=False)
            assert answer.status_code == (200 if actor in allowed else 403), f"{path} as {actor}"
    other = world.clients["case-worker"].get(f"/worklist/{world.task_id}")
    assert other.status_code == 404
    assert world.referral_id not in other.text
