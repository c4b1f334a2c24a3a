"""Every error status the API uses answers RFC 9457 problem details; and the OpenAPI document holds up."""

from __future__ import annotations

import contextlib
import json
import time
from contextlib import closing
from typing import Any

import httpx
import pytest

from tests.support.hub import RunningHub, free_port, sample, with_new_message_id
from tests.support.staff import add_users, staff_client

SCHOOL = "school-songjiang-no2-middle"
CAMHS = "camhs-songjiang-mhc"


def assert_problem(answer: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text[:500]
    assert answer.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = answer.json()
    assert {"type", "title", "status", "detail", "instance", "code"} <= body.keys()
    assert body["status"] == status
    assert body["type"].endswith("/" + body["code"])
    if code:
        assert body["code"] == code
    return body


@pytest.fixture(scope="module")
def users(hub: RunningHub) -> None:
    add_users(
        hub,
        [
            ("pd.monitor", "district-office", "district-monitor"),
            ("pd.clinician", CAMHS, "clinician"),
            ("pd.throttled", CAMHS, "clinician"),
        ],
    )


def test_400_contradictory_time_range(hub: RunningHub, users: None) -> None:
    with closing(staff_client(hub, "pd.monitor")) as monitor:
        answer = monitor.get(
            "/v1/dashboard/metrics",
            params={"since": "2025-03-01T00:00:00+08:00", "until": "2025-02-01T00:00:00+08:00"},
        )
    assert_problem(answer, 400, "range-invalid")


def test_401_without_credentials_with_a_bearer_challenge(hub: RunningHub) -> None:
    body = assert_problem(httpx.get(f"{hub.base_url}/v1/inbox"), 401, "unauthenticated")
    assert body["instance"] == "/v1/inbox"
    wrong = httpx.post(f"{hub.base_url}/v1/auth/login", json={"username": "nobody", "password": "x" * 12})
    assert_problem(wrong, 401, "unauthenticated")


def test_403_by_role_and_for_a_session_request_without_csrf_token(hub: RunningHub, users: None) -> None:
    with closing(staff_client(hub, "pd.monitor")) as monitor:
        assert_problem(monitor.get("/v1/inbox"), 403, "role-forbidden")
    with closing(staff_client(hub, "pd.clinician")) as clinician:
        del clinician.headers["X-CSRF-Token"]
        answer = clinician.post("/v1/tasks/nope/status", json={"status": "received"})
    assert_problem(answer, 403, "csrf-failed")


def test_404_for_what_the_caller_cannot_see(hub: RunningHub) -> None:
    with hub.client(SCHOOL) as school:
        assert_problem(school.get("/v1/referrals/ref-does-not-exist"), 404, "referral-not-found")
        assert_problem(school.get("/v1/no-such-endpoint"), 404, "not-found")


def test_409_for_an_illegal_transition(hub: RunningHub) -> None:
    referral_id = hub.submit(SCHOOL, with_new_message_id(sample("referral-school-camhs-high.json"))).json()[
        "referral_id"
    ]
    [item] = hub.wait_inbox(CAMHS, referral_id)
    with hub.client(CAMHS) as camhs:
        answer = camhs.post(f"/v1/tasks/{item['task_id']}/status", json={"status": "completed"})
    body = assert_problem(answer, 409, "invalid-transition")
    assert body["errors"][0]["from"] == "requested"


def test_413_for_a_body_over_the_limit(hub: RunningHub) -> None:
    headers = {"Authorization": f"Bearer {hub.key_for(SCHOOL)}", "Content-Type": "application/fhir+json"}
    big = json.dumps({"resourceType": "Bundle", "pad": "x" * 2_100_000})
    assert_problem(
        httpx.post(f"{hub.base_url}/v1/referrals", content=big, headers=headers), 413, "payload-too-large"
    )
    # Without a Content-Length (chunked), refused once the bytes read pass the limit.
    chunks = (big[i : i + 65536].encode() for i in range(0, len(big), 65536))
    assert_problem(
        httpx.post(f"{hub.base_url}/v1/referrals", content=chunks, headers=headers), 413, "payload-too-large"
    )


def test_422_with_the_offending_parameter(hub: RunningHub) -> None:
    with hub.client(CAMHS) as camhs:
        body = assert_problem(camhs.get("/v1/inbox", params={"limit": 0}), 422, "request-invalid")
        assert body["errors"][0]["path"] == "$.limit"
        assert_problem(camhs.get("/v1/inbox", params={"status": "lost"}), 422, "filter-invalid")


def test_429_after_repeated_failed_logins_with_retry_after(hub: RunningHub, users: None) -> None:
    url = f"{hub.base_url}/v1/auth/login"
    for _ in range(5):
        assert (
            httpx.post(url, json={"username": "pd.throttled", "password": "wrong-password!"}).status_code
            == 401
        )
    # Even the right password is refused while throttled: guessing cannot continue.
    answer = httpx.post(url, json={"username": "pd.throttled", "password": "test-password-0123"})
    assert_problem(answer, 429, "login-throttled")
    assert int(answer.headers["retry-after"]) > 0


def test_429_when_an_agency_submits_faster_than_its_rate(hub: RunningHub) -> None:
    # Restart the API with a tiny bucket (2 at once, one every 100 s), then put it back.
    original = dict(hub.env)
    hub.stop("api")
    hub.env.update({"HUB_API__SUBMIT_BURST": "2", "HUB_API__SUBMIT_RATE_PER_S": "0.01"})
    hub.start("api", "api")
    try:
        hub.wait_api()
        codes = [
            hub.submit(SCHOOL, with_new_message_id(sample("referral-school-camhs-high.json"))).status_code
            for _ in range(3)
        ]
        assert codes[:2] == [202, 202]
        answer = hub.submit(SCHOOL, with_new_message_id(sample("referral-school-camhs-high.json")))
        assert_problem(answer, 429, "rate-limited")
        assert 1 <= int(answer.headers["retry-after"]) <= 100
        # Per agency: another agency's bucket is untouched.
        other = hub.submit(
            "district-centre", with_new_message_id(sample("referral-hotline-crisis-camhs.json"))
        )
        assert other.status_code == 202, other.text
    finally:
        hub.stop("api")
        hub.env.clear()
        hub.env.update(original)
        hub.start("api", "api")
        hub.wait_api()


def test_503_when_the_broker_does_not_acknowledge_in_time_and_a_re_send_is_taken_once(
    hub: RunningHub,
) -> None:
    """An API whose broker cannot be reached still starts and serves reads; a submission waits at
    most HUB_KAFKA__PUBLISH_TIMEOUT_S, then is refused (503, Retry-After) and not accepted. The
    connector re-sends the same message once the broker is back: one referral, delivered once."""
    original = dict(hub.env)
    hub.stop("api")
    # Nothing listens there: what the API's producer meets while the broker is down.
    hub.env.update({"HUB_KAFKA__BOOTSTRAP": f"127.0.0.1:{free_port()}", "HUB_KAFKA__PUBLISH_TIMEOUT_S": "2"})
    hub.start("api", "api")
    bundle = with_new_message_id(sample("referral-school-camhs-high.json"))
    try:
        deadline = time.monotonic() + 60
        while True:  # /healthz answers (503 "degraded": no broker) once the API is up
            with contextlib.suppress(httpx.TransportError):
                health = httpx.get(f"{hub.base_url}/healthz", timeout=10)
                break
            assert time.monotonic() < deadline, hub.log("api")
            time.sleep(0.3)
        assert health.status_code == 503
        assert health.json()["checks"]["broker"] == "unreachable"

        started = time.monotonic()
        answer = hub.submit(SCHOOL, bundle)
        waited = time.monotonic() - started
        body = assert_problem(answer, 503, "broker-unavailable")
        assert 1 <= int(answer.headers["retry-after"]) <= 60
        assert "NOT accepted" in body["detail"] and "same MessageHeader id" in body["detail"]
        assert 2 <= waited < 2 + 5, f"answered after {waited:.1f}s; the bound is 2 s"
        with hub.client(SCHOOL) as school:  # reads need no broker
            assert school.get("/v1/referrals").status_code == 200
    finally:
        hub.stop("api")
        hub.env.clear()
        hub.env.update(original)
        hub.start("api", "api")
        hub.wait_api()
    again = hub.submit(SCHOOL, bundle)
    assert again.status_code == 202, again.text
    assert len(hub.wait_inbox(CAMHS, again.json()["referral_id"])) == 1


# ------------------------------------------------------------------------------------------ OpenAPI


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref" and isinstance(v, str)] + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_openapi_document_is_complete_and_consistent(hub: RunningHub) -> None:
    spec = httpx.get(f"{hub.base_url}/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"]
    assert spec["info"]["version"]
    schemas = spec["components"]["schemas"]
    # Every reference resolves.
    for ref in _refs(spec):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref
    assert "ProblemDetails" in schemas
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert op.get("summary"), f"{method} {path} has no summary"
            assert op["responses"], f"{method} {path} has no responses"
            errors = {s: r for s, r in op["responses"].items() if s.startswith(("4", "5")) and s != "422"}
            for status, response in errors.items():
                media = response.get("content", {})
                assert "application/problem+json" in media, f"{method} {path} {status} is not a problem"
            if path.startswith("/v1/") and not path.startswith("/v1/auth/login"):
                assert "401" in op["responses"], f"{method} {path} does not document 401"
    # Examples where a client needs them most.
    submit = spec["paths"]["/v1/referrals"]["post"]
    assert submit["requestBody"]["content"]["application/fhir+json"].get("examples")
    assert schemas["StatusChange"].get("examples")
    assert schemas["MetricsOut"].get("examples")
    assert schemas["DirectoryPage"].get("examples")
