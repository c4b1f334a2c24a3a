"""A referral posted over HTTP reaches the recipient's inbox through the real broker and worker."""

from __future__ import annotations

import time

from tests.support.hub import RunningHub, sample, with_new_message_id

SCHOOL = "school-songjiang-no2-middle"
CAMHS = "camhs-songjiang-mhc"
POLICE = "police-songjiang"


def test_referral_reaches_inbox_and_acknowledgement_shows_in_timeline(hub: RunningHub) -> None:
    bundle = with_new_message_id(sample("referral-school-camhs-high.json"))
    answer = hub.submit(SCHOOL, bundle)
    assert answer.status_code == 202, answer.text
    referral_id = answer.json()["referral_id"]

    [item] = hub.wait_inbox(CAMHS, referral_id)
    assert item["sender_org"] == SCHOOL
    assert item["status"] == "requested"
    assert item["risk_level"] == 3

    with hub.client(CAMHS) as camhs:
        ack = camhs.post(f"/v1/tasks/{item['task_id']}/status", json={"status": "received"})
        assert ack.status_code == 202, ack.text
        timeline = camhs.get(f"/v1/referrals/{referral_id}").json()["timeline"]
    assert [e["to_status"] for e in timeline] == ["requested", "received"]
    assert timeline[-1]["actor_org"] == CAMHS

    with hub.client(SCHOOL) as school:
        seen_by_sender = school.get(f"/v1/referrals/{referral_id}").json()
    assert seen_by_sender["deliveries"][0]["status"] == "received"


def test_another_agency_sees_nothing_of_it(hub: RunningHub) -> None:
    bundle = with_new_message_id(sample("referral-school-camhs-high.json"))
    referral_id = hub.submit(SCHOOL, bundle).json()["referral_id"]
    [item] = hub.wait_inbox(CAMHS, referral_id)
    with hub.client(POLICE) as police:
        assert all(i["referral_id"] != referral_id for i in police.get("/v1/inbox").json()["items"])
        assert police.get(f"/v1/referrals/{referral_id}").status_code == 404
        denied = police.post(f"/v1/tasks/{item['task_id']}/status", json={"status": "received"})
        assert denied.status_code == 404
        assert denied.headers["content-type"].startswith("application/problem+json")


def test_resubmitting_the_same_message_delivers_once(hub: RunningHub) -> None:
    bundle = with_new_message_id(sample("referral-school-camhs-high.json"))
    first = hub.submit(SCHOOL, bundle).json()["referral_id"]
    second = hub.submit(SCHOOL, bundle).json()["referral_id"]
    assert first == second
    hub.wait_inbox(CAMHS, first)
    time.sleep(2)  # give a duplicate the chance to show up
    assert len(hub.wait_inbox(CAMHS, first)) == 1


def test_invalid_transition_is_refused_with_409(hub: RunningHub) -> None:
    bundle = with_new_message_id(sample("referral-school-camhs-high.json"))
    referral_id = hub.submit(SCHOOL, bundle).json()["referral_id"]
    [item] = hub.wait_inbox(CAMHS, referral_id)
    with hub.client(CAMHS) as camhs:
        refused = camhs.post(f"/v1/tasks/{item['task_id']}/status", json={"status": "completed"})
    assert refused.status_code == 409
    body = refused.json()
    assert body["code"] == "invalid-transition"
    assert "requested" in body["detail"]


def test_health_reports_broker_and_database(hub: RunningHub) -> None:
    import httpx

    body = httpx.get(f"{hub.base_url}/healthz").json()
    assert body == {"status": "ok", "checks": {"broker": "ok", "database": "ok"}}
