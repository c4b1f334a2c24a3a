"""Break-glass review on the real hub: crisis referrals disclosed on the emergency basis are reviewed
by a supervisor of the agency that sent them, the review reaches the audit chain, and the district
dashboard shows the uses and the share reviewed (DESIGN §3)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.hub import RunningHub, new_student, sample, wait_for
from tests.support.staff import add_users, staff_client

HOTLINE = "district-centre"  # the 知心365 hotline sends the crisis sample
USES = 5  # the dashboard suppresses counts under 5

USERS = [
    ("h.supervisor", HOTLINE, "supervisor"),
    ("h.referrer", HOTLINE, "referrer"),
    ("m.supervisor", "camhs-songjiang-mhc", "supervisor"),
    ("d.monitor", "district-office", "district-monitor"),
    ("d.auditor", "district-office", "auditor"),
]


@dataclass
class World:
    hub: RunningHub
    deliveries: dict[str, dict[str, Any]]  # delivery id -> the sender's view of it
    clients: dict[str, httpx.Client]


@pytest.fixture(scope="module")
def world(hub: RunningHub) -> Iterator[World]:
    add_users(hub, USERS)
    clients = {username: staff_client(hub, username) for username, _, _ in USERS}
    referral_ids = []
    for _ in range(USES):
        answer = hub.submit(HOTLINE, new_student(sample("referral-hotline-crisis-camhs.json")))
        assert answer.status_code == 202, answer.text
        referral_ids.append(answer.json()["referral_id"])
    found: dict[str, dict[str, Any]] = {}
    with hub.client(HOTLINE) as hotline:

        def all_delivered() -> bool:
            for rid in referral_ids:
                for d in hotline.get(f"/v1/referrals/{rid}").json()["deliveries"]:
                    found[d["delivery_id"]] = {**d, "referral_id": rid}
            return {d["referral_id"] for d in found.values()} == set(referral_ids)

        wait_for("the crisis deliveries", all_delivered, hub)
    try:
        yield World(hub, found, clients)
    finally:
        for c in clients.values():
            c.close()


def emergency(world: World) -> list[str]:
    return sorted(d for d, v in world.deliveries.items() if v["legal_basis"] == "emergency")


def review(client: httpx.Client, delivery_id: str, **body: str) -> httpx.Response:
    payload = {"outcome": "justified", "guardian_notice": "informed", **body}
    return client.post(f"/v1/break-glass/{delivery_id}/review", json=payload)


def test_each_crisis_referral_was_disclosed_on_the_emergency_basis(world: World) -> None:
    # The premise of the rest: the crisis rule discloses without consent, on the emergency basis.
    assert len(emergency(world)) == USES


def test_the_senders_supervisor_lists_the_uses_without_student_data(world: World) -> None:
    answer = world.clients["h.supervisor"].get("/v1/break-glass")
    assert answer.status_code == 200, answer.text
    listed = {i["delivery_id"]: i for i in answer.json()["items"]}
    assert set(emergency(world)) <= set(listed)
    item = listed[emergency(world)[0]]
    assert item["recipient_org"].startswith("camhs-") and item["risk_level"] == 4
    assert "psn:" not in answer.text  # ids and codes only: no pseudonym, no name
    names = [
        n["text"]
        for e in sample("referral-hotline-crisis-camhs.json")["entry"]
        if e["resource"]["resourceType"] == "Patient"
        for n in e["resource"].get("name", [])
        if n.get("text")
    ]
    assert names and not any(n in answer.text for n in names)


def test_a_review_is_recorded_once_and_reaches_the_audit_chain(world: World) -> None:
    supervisor = world.clients["h.supervisor"]
    target = emergency(world)[0]
    done = review(supervisor, target, outcome="not-justified", guardian_notice="withheld-endangers-child")
    assert done.status_code == 201, done.text
    assert done.json()["outcome"] == "not-justified"

    again = review(supervisor, target)
    assert again.status_code == 409, again.text
    assert again.json()["code"] == "already-reviewed"
    assert "not-justified" in again.json()["detail"]  # the first review stands

    reviewed = {
        i["delivery_id"]: i for i in supervisor.get("/v1/break-glass?status=reviewed").json()["items"]
    }
    assert reviewed[target]["review"]["guardian_notice"] == "withheld-endangers-child"
    pending = {i["delivery_id"] for i in supervisor.get("/v1/break-glass?status=pending").json()["items"]}
    assert target not in pending

    auditor = world.clients["d.auditor"]
    referral_id = world.deliveries[target]["referral_id"]

    def review_events() -> list[dict[str, Any]]:
        items = auditor.get(
            "/v1/audit/events", params={"referral_id": referral_id, "type": "break-glass"}
        ).json()["items"]
        return [i["event"] for i in items if i["event"]["action"] == "U"]

    [event] = wait_for("the review in the audit chain", review_events, world.hub)
    assert event["entity"]["delivery_id"] == target
    assert event["entity"]["detail"] == "reviewed:not-justified:guardian-withheld-endangers-child"
    assert event["agent"] == {"org_id": HOTLINE, "role": "supervisor", "user_id": event["agent"]["user_id"]}
    assert event["agent"]["user_id"]  # the reviewing user's id, never a name
    assert auditor.get("/v1/audit/verify").json()["ok"] is True


def test_a_bad_review_names_the_field_and_records_nothing(world: World) -> None:
    supervisor = world.clients["h.supervisor"]
    target = emergency(world)[1]
    answer = review(supervisor, target, outcome="fine")
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["code"] == "review-invalid"
    [issue] = problem["errors"]
    assert issue["field"] == "outcome" and issue["allowed"] == ["justified", "not-justified"]
    pending = {i["delivery_id"] for i in supervisor.get("/v1/break-glass?status=pending").json()["items"]}
    assert target in pending
    assert supervisor.get("/v1/break-glass?status=later").status_code == 422


def test_other_agencies_and_other_roles_cannot_see_or_review(world: World) -> None:
    target = emergency(world)[2]
    other = world.clients["m.supervisor"]  # the recipient clinic's supervisor: not who asked
    listed = other.get("/v1/break-glass").json()["items"]
    assert target not in {i["delivery_id"] for i in listed}
    hidden = review(other, target)
    assert hidden.status_code == 404, hidden.text
    assert hidden.json()["code"] == "break-glass-not-found"
    referrer = world.clients["h.referrer"]  # same agency, not a supervisor
    assert review(referrer, target).status_code == 403
    assert referrer.get("/v1/break-glass").status_code == 403
    with world.hub.client(HOTLINE) as system:  # the agency's connector key is not a supervisor either
        assert review(system, target).status_code == 403
    mine = world.clients["h.supervisor"].get("/v1/break-glass?status=pending").json()["items"]
    assert target in {i["delivery_id"] for i in mine}


def test_the_dashboard_shows_uses_and_the_share_reviewed(world: World) -> None:
    monitor = world.clients["d.monitor"]
    before = monitor.get("/v1/dashboard/metrics").json()["break_glass"]
    assert before["uses"] == USES
    supervisor = world.clients["h.supervisor"]
    for item in supervisor.get("/v1/break-glass?status=pending").json()["items"]:
        assert review(supervisor, item["delivery_id"]).status_code == 201
    after = monitor.get("/v1/dashboard/metrics").json()["break_glass"]
    assert after == {"uses": USES, "reviewed": {"n": USES, "count": USES, "rate": 1.0, "suppressed": False}}
    # The hotline's supervisor sees the same figures for their own agency's flows.
    own = supervisor.get("/v1/dashboard/metrics").json()
    assert own["scope"] == HOTLINE and own["break_glass"]["uses"] == USES

    page = monitor.get("/dashboard")
    assert page.status_code == 200
    block = page.text[page.text.index('data-testid="break-glass"') :]
    assert "紧急披露" in block and "100%" in block


def test_the_review_page_in_chinese_and_english(hub: RunningHub, world: World) -> None:
    # A fresh use to review through the page's form.
    answer = hub.submit(HOTLINE, new_student(sample("referral-hotline-crisis-camhs.json")))
    assert answer.status_code == 202, answer.text
    referral_id = answer.json()["referral_id"]
    supervisor = world.clients["h.supervisor"]

    def pending() -> list[dict[str, Any]]:
        items = supervisor.get("/v1/break-glass?status=pending").json()["items"]
        return [i for i in items if i["referral_id"] == referral_id]

    [item] = wait_for("the new emergency disclosure", pending, hub)
    page = supervisor.get("/break-glass")
    assert page.status_code == 200
    assert "紧急披露复核" in page.text and item["delivery_id"] in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    forged = supervisor.post(
        f"/break-glass/{item['delivery_id']}/review",
        data={"outcome": "justified", "guardian_notice": "informed", "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    posted = supervisor.post(
        f"/break-glass/{item['delivery_id']}/review",
        data={"outcome": "justified", "guardian_notice": "informed", "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert posted.status_code == 303 and posted.headers["location"].startswith("/break-glass?status=reviewed")
    done = supervisor.get(posted.headers["location"])
    assert 'data-testid="review-done"' in done.text and "正当" in done.text
    english = supervisor.get("/break-glass?status=reviewed&lang=en")
    assert "Break-glass review" in english.text and "Guardian informed" in english.text
    assert not pending()
