"""The referral lifecycle on a real hub: transitions, decline and re-route, SLA escalation, follow-ups,
consent revocation withdrawing an unopened delivery, and a dead letter replayed after a rule fix.

The hub runs a drill copy of the shipped rules whose crisis SLAs are seconds instead of minutes, and
follow-up offsets of seconds, so deadlines pass while the test watches.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hub import REPO, RunningHub, make_hub, new_student, sample, wait_for

SCHOOL = "school-songjiang-no2-middle"
FEEDBACK = "seen twice; plan agreed with school"
CAMHS = "camhs-songjiang-mhc"
HOTLINE = "district-centre"


def _drill_rules(target: Path) -> Path:
    rules = target / "rules"
    shutil.copytree(
        REPO / "routing_rules", rules, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.py")
    )
    crisis = rules / "20-crisis.yaml"
    text = crisis.read_text(encoding="utf-8")
    text = re.sub(r"acknowledge: 30m", "acknowledge: 4s", text)
    text = re.sub(r"decide: 1h", "decide: 40s", text)
    text = re.sub(r"first_contact: 2h", "first_contact: 60s", text)
    crisis.write_text(text, encoding="utf-8")
    return rules


@pytest.fixture(
    scope="module",
    # One worker running every step (`make up`), and the steps split between a routing worker and a
    # downstream one, each in its consumer group (HUB_WORKER__ROLE): every feature works in both.
    params=[("all",), ("routing", "downstream")],
    ids=["one-worker", "split-roles"],
)
def drill(
    kafka: str, postgres: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningHub]:
    tmp = Path(tmp_path_factory.mktemp("drill"))
    env = {
        "HUB_RULES__DIR": str(_drill_rules(tmp)),
        "HUB_RULES__RELOAD_SECONDS": "1",
        "HUB_SLA__CHECK_SECONDS": "1",
        # 4 s, then a day and two days: the first visit falls due while the test waits.
        "HUB_SLA__FOLLOWUP_OFFSETS_DAYS": "[0.00005, 1, 2]",
    }
    running = make_hub(tmp, kafka, postgres, extra_env=env, worker_roles=request.param)
    try:
        yield running
    finally:
        running.stop_all()


def move(hub: RunningHub, org: str, task_id: str, status: str, **extra: Any) -> dict[str, Any]:
    with hub.client(org) as c:
        answer = c.post(f"/v1/tasks/{task_id}/status", json={"status": status, **extra})
    assert answer.status_code == 202, answer.text
    return answer.json()  # type: ignore[no-any-return]


def timeline(hub: RunningHub, org: str, referral_id: str) -> list[dict[str, Any]]:
    with hub.client(org) as c:
        return c.get(f"/v1/referrals/{referral_id}").json()["timeline"]  # type: ignore[no-any-return]


def test_every_transition_closes_the_loop_and_schedules_follow_ups(drill: RunningHub) -> None:
    referral_id = drill.submit(SCHOOL, new_student(sample("referral-school-camhs-high.json"))).json()[
        "referral_id"
    ]
    [item] = drill.wait_inbox(CAMHS, referral_id)
    task = item["task_id"]
    move(drill, CAMHS, task, "received")
    move(drill, CAMHS, task, "accepted")
    move(drill, CAMHS, task, "in-progress", business_status="appointment-booked")
    move(drill, CAMHS, task, "on-hold", reason="student in hospital for surgery")
    move(drill, CAMHS, task, "in-progress")
    with drill.client(CAMHS) as camhs:
        refused = camhs.post(f"/v1/tasks/{task}/status", json={"status": "completed"})
        assert refused.status_code == 409 and refused.json()["code"] == "feedback-required"
    move(
        drill,
        CAMHS,
        task,
        "completed",
        feedback=FEEDBACK,
        business_status="feedback-sent",
    )

    # The loop closes: the referrer reads the feedback; it crossed Kafka sealed for the referrer only.
    school_view = timeline(drill, SCHOOL, referral_id)
    assert [e.get("feedback") for e in school_view if e["to_status"] == "completed"] == [FEEDBACK]
    assert all("feedback" not in e for e in timeline(drill, CAMHS, referral_id))
    from tests.integration.test_sealed_delivery import _topic_bytes

    assert FEEDBACK.encode() not in _topic_bytes(drill, "tasks.status-changed")

    statuses = [
        e["to_status"] for e in timeline(drill, SCHOOL, referral_id) if e["kind"] in ("delivered", "status")
    ]
    assert statuses == [
        "requested",
        "received",
        "accepted",
        "in-progress",
        "on-hold",
        "in-progress",
        "completed",
    ]

    def school_follow_ups() -> list[dict[str, Any]]:
        with drill.client(SCHOOL) as school:
            items = school.get("/v1/follow-ups").json()["items"]
        return [f for f in items if f["referral_id"] == referral_id]

    follow_ups = wait_for(
        "three follow-ups for the school",
        lambda: len(school_follow_ups()) == 3 and school_follow_ups(),
        drill,
    )
    first = min(follow_ups, key=lambda f: f["sequence"])
    # The first visit falls due after seconds: the SLA monitor flags and escalates it.
    wait_for(
        "the overdue follow-up escalated",
        lambda: any(
            e["subject_id"] == first["followup_id"] and e["level"] >= 1
            for e in drill.client(SCHOOL).get("/v1/escalations").json()["items"]
        ),
        drill,
    )
    with drill.client(SCHOOL) as school:
        done = school.post(f"/v1/follow-ups/{first['followup_id']}/done", json={"outcome": "visited"})
        assert done.status_code == 202, done.text
        again = school.post(f"/v1/follow-ups/{first['followup_id']}/done", json={"outcome": "visited"})
        assert again.status_code in (202, 409)
    wait_for(
        "the follow-up recorded done",
        lambda: any(
            f["followup_id"] == first["followup_id"] and f["status"] == "done" for f in school_follow_ups()
        ),
        drill,
    )
    with drill.client(CAMHS) as camhs:
        assert (
            camhs.post(f"/v1/follow-ups/{first['followup_id']}/done", json={"outcome": "visited"}).status_code
            == 404
        )


def test_a_declined_referral_goes_to_the_next_recipient_of_its_pathway(drill: RunningHub) -> None:
    referral_id = drill.submit(SCHOOL, new_student(sample("referral-school-camhs-high.json"))).json()[
        "referral_id"
    ]
    [item] = drill.wait_inbox(CAMHS, referral_id)
    move(drill, CAMHS, item["task_id"], "received")
    with drill.client(CAMHS) as camhs:
        no_reason = camhs.post(f"/v1/tasks/{item['task_id']}/status", json={"status": "rejected"})
        assert no_reason.status_code == 422 and no_reason.json()["code"] == "reason-required"
    move(drill, CAMHS, item["task_id"], "rejected", reason="no child psychiatrist until next month")

    def deliveries() -> list[dict[str, Any]]:
        with drill.client(SCHOOL) as school:
            return school.get(f"/v1/referrals/{referral_id}").json()["deliveries"]  # type: ignore[no-any-return]

    rerouted = wait_for("a second recipient", lambda: len(deliveries()) >= 2 and deliveries(), drill)
    by_org = {d["recipient_org"]: d for d in rerouted}
    assert by_org[CAMHS]["status"] == "rejected"
    [other] = [d for org, d in by_org.items() if org != CAMHS]
    assert other["status"] == "requested"
    assert other["recipient_org"].startswith("camhs-")


def test_an_unacknowledged_crisis_reminds_then_escalates_up_the_chain(drill: RunningHub) -> None:
    answer = drill.submit(HOTLINE, new_student(sample("referral-hotline-crisis-camhs.json")))
    assert answer.status_code == 202, answer.text
    referral_id = answer.json()["referral_id"]
    with drill.client(HOTLINE) as hotline:
        [delivery] = wait_for(
            "the crisis delivery",
            lambda: hotline.get(f"/v1/referrals/{referral_id}").json()["deliveries"],
            drill,
        )
    camhs = delivery["recipient_org"]

    def escalations() -> list[dict[str, Any]]:
        with drill.client(camhs) as c:
            return [e for e in c.get("/v1/escalations").json()["items"] if e["referral_id"] == referral_id]

    seen = wait_for(
        "level 2 of the acknowledge escalation",
        lambda: {e["level"] for e in escalations() if e["kind"] == "ack"} >= {0, 1, 2} and escalations(),
        drill,
        timeout=60,
    )
    ack = {e["level"]: e["notify"] for e in seen if e["kind"] == "ack"}
    assert ack[0] == camhs  # the reminder goes to the recipient itself
    assert ack[1] == "role:duty-psychiatrist" and ack[2] == "district-centre"
    kinds = [e["kind"] for e in timeline(drill, HOTLINE, referral_id)]
    assert "reminder" in kinds and "escalated" in kinds
    with drill.client("district-centre") as centre:
        assert any(e["referral_id"] == referral_id for e in centre.get("/v1/escalations").json()["items"])

    # Acknowledging stops the acknowledge clock: no level beyond what the chain has is ever raised.
    move(drill, camhs, delivery["task_id"], "received")
    time.sleep(3)
    assert max(e["level"] for e in escalations() if e["kind"] == "ack") == 2


def test_revoking_consent_withdraws_the_unopened_delivery_and_stops_further_disclosure(
    drill: RunningHub,
) -> None:
    from hub.adapters.sealing import HubSealing
    from hub.domain.error import Conflict
    from tests.integration.test_sealed_delivery import _seal

    bundle = new_student(sample("referral-school-camhs-high.json"))
    pseudonym = next(
        e["resource"]["identifier"][0]["value"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )
    referral_id = drill.submit(SCHOOL, bundle).json()["referral_id"]
    drill.wait_inbox(CAMHS, referral_id)

    revoke = sample("messages/consent-update-revoked.json")
    revoke["entry"][0]["resource"]["id"] = "mh-" + uuid.uuid4().hex[:12]
    for entry in revoke["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["identifier"][0]["value"] = pseudonym
    with drill.client(SCHOOL) as school:
        answer = school.post(
            "/v1/consents",
            content=json.dumps(revoke).encode(),
            headers={"Content-Type": "application/fhir+json"},
        )
    assert answer.status_code == 202, answer.text
    assert answer.json()["consents"] == [{"consent_id": f"{pseudonym}/consent-0001", "status": "inactive"}]

    def withdrawn() -> bool:
        return any(e["kind"] == "withdrawn" for e in timeline(drill, SCHOOL, referral_id))

    wait_for("the delivery withdrawn", withdrawn, drill)
    [item] = drill.wait_inbox(CAMHS, referral_id)
    assert item["status"] == "cancelled" and item["business_status"] == "withdrawn"
    seal = _seal(drill, referral_id)
    assert seal.wrapped_key is None  # the key is gone: the ciphertext on Kafka is unreadable now
    with pytest.raises(Conflict):
        HubSealing(drill.key_store(), demo_custody=False).open_delivery(seal)

    # The same consent no longer carries a new referral to CAMHS.
    again = dict(bundle)
    again = json.loads(json.dumps(bundle))
    again["entry"][0]["resource"]["id"] = "mh-" + uuid.uuid4().hex[:12]
    second = drill.submit(SCHOOL, again).json()["referral_id"]
    refusals = wait_for(
        "the refusal", lambda: [e for e in timeline(drill, SCHOOL, second) if e["kind"] == "refused"], drill
    )
    assert CAMHS in refusals[0]["reason"]
    with drill.client(CAMHS) as camhs:
        assert all(
            i["referral_id"] != second for i in camhs.get("/v1/inbox", params={"limit": 500}).json()["items"]
        )


def _hub_cli(hub: RunningHub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env=hub.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_unrouted_referral_is_a_dead_letter_and_replays_after_a_rule_fix(drill: RunningHub) -> None:
    bundle = new_student(sample("referral-school-street-centre-elevated.json"))
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "ServiceRequest":
            for ext in entry["resource"].get("extension", []):
                if ext["url"].endswith("/risk-level"):
                    ext["valueCoding"]["code"] = "1"
                    ext["valueCoding"]["display"] = "关注"
    answer = drill.submit(SCHOOL, bundle)
    assert answer.status_code == 202, answer.text
    referral_id = answer.json()["referral_id"]

    def dead() -> list[dict[str, Any]]:
        out = _hub_cli(drill, "deadletters", "list", "--json", "--reason", "no-route-matched")
        assert out.returncode == 0, out.stderr
        return [d for d in json.loads(out.stdout) if d["key"] == referral_id]

    [letter] = wait_for("the no-route dead letter", dead, drill)
    assert letter["step"] == "route_referrals" and not letter["replayed"]
    assert "张" not in json.dumps(letter, ensure_ascii=False)  # no PII in what operators see
    # The fallback is explicit and visible to the sender: the district centre's triage queue, which
    # receives the referral where a basis allows it, or a recorded refusal where none does.
    fallback = [e for e in timeline(drill, SCHOOL, referral_id) if e["kind"] in ("delivered", "refused")]
    assert fallback, timeline(drill, SCHOOL, referral_id)
    assert all("district-centre" in (e["reason"] or "") or e["kind"] == "delivered" for e in fallback)

    # The district adds a rule for level-1 school referrals; workers hot-reload it.
    rules_dir = Path(drill.env["HUB_RULES__DIR"])
    (rules_dir / "45-attention.yaml").write_text(
        (REPO / "tests" / "integration" / "fixtures" / "45-attention.yaml").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    check = _hub_cli(drill, "rules", "check", str(rules_dir))
    assert check.returncode == 0, check.stdout + check.stderr
    time.sleep(3)  # > HUB_RULES__RELOAD_SECONDS
    replay = _hub_cli(drill, "deadletters", "replay", letter["event_id"])
    assert replay.returncode == 0, replay.stderr

    def street_centre_has_it() -> bool:
        with drill.client(SCHOOL) as school:
            return any(
                d["recipient_org"].startswith("street-centre-")
                for d in school.get(f"/v1/referrals/{referral_id}").json()["deliveries"]
            )

    wait_for("the re-routed delivery", street_centre_has_it, drill)
    assert _hub_cli(drill, "deadletters", "replay", letter["event_id"]).returncode == 1  # once only


def test_the_disclosure_opening_and_transitions_are_chained_and_the_chain_verifies(drill: RunningHub) -> None:
    referral_id = drill.submit(SCHOOL, new_student(sample("referral-school-camhs-high.json"))).json()[
        "referral_id"
    ]
    [item] = drill.wait_inbox(CAMHS, referral_id)
    with drill.client(CAMHS) as camhs:
        assert camhs.get(f"/v1/tasks/{item['task_id']}/content").status_code == 200  # opened
    move(drill, CAMHS, item["task_id"], "received")

    def chained() -> set[str]:
        done = subprocess.run(
            [sys.executable, "-m", "hub", "audit", "search", "--referral", referral_id, "--json"],
            env=drill.env,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return {x["event"]["type"] for x in json.loads(done.stdout)["items"]}

    # Disclosed by the routing step, opened and moved through the API: all in the one chain.
    wait_for(
        "the disclosure, the access and the transition in the audit chain",
        lambda: {"disclosure", "access", "transition"} <= chained(),
        drill,
    )
    verified = subprocess.run(
        [sys.executable, "-m", "hub", "audit", "verify"],
        env=drill.env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
