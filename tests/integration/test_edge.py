"""The edge refuses bad input with RFC 9457 problem details, and nothing reaches Kafka."""

from __future__ import annotations

import json

import httpx
from kafka import KafkaConsumer, TopicPartition

from tests.support.hub import RunningHub, sample, with_new_message_id

SCHOOL = "school-songjiang-no2-middle"


def _intake_size(hub: RunningHub) -> int:
    topic = hub.prefix + "referrals.submitted"
    consumer = KafkaConsumer(bootstrap_servers=hub.env["HUB_KAFKA__BOOTSTRAP"])
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def test_invalid_bundle_gets_422_naming_the_json_path_and_nothing_is_produced(hub: RunningHub) -> None:
    before = _intake_size(hub)
    bundle = with_new_message_id(sample("referral-school-camhs-high.json"))
    bundle["entry"][3]["resource"]["birthDate"] = "not-a-date"
    answer = hub.submit(SCHOOL, bundle)
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["status"] == 422
    assert problem["type"].endswith("/profile-invalid")
    assert any(e["path"].startswith("$.entry[3].resource.birthDate") for e in problem["errors"]), problem

    bundle = with_new_message_id(sample("referral-school-camhs-high.json"))
    bundle["entry"][1]["resource"]["focus"]["reference"] = "urn:uuid:nowhere"
    problem = hub.submit(SCHOOL, bundle).json()
    assert {"path": "$.entry[1].resource.focus", "rule": "consistency"}.items() <= problem["errors"][
        0
    ].items() or any(e["path"] == "$.entry[1].resource.focus" for e in problem["errors"])
    assert _intake_size(hub) == before


def test_missing_or_unknown_key_is_401(hub: RunningHub) -> None:
    bundle = sample("referral-school-camhs-high.json")
    no_key = httpx.post(f"{hub.base_url}/v1/referrals", json=bundle)
    assert no_key.status_code == 401
    assert no_key.json()["code"] == "unauthenticated"
    bad_key = httpx.post(
        f"{hub.base_url}/v1/referrals", json=bundle, headers={"Authorization": "Bearer qx_nope"}
    )
    assert bad_key.status_code == 401


def test_an_agency_cannot_submit_in_another_agency_s_name(hub: RunningHub) -> None:
    answer = hub.submit("police-songjiang", with_new_message_id(sample("referral-school-camhs-high.json")))
    assert answer.status_code == 403
    assert answer.json()["code"] == "sender-mismatch"


def test_oversized_body_is_413_and_non_json_is_422(hub: RunningHub) -> None:
    headers = {"Authorization": f"Bearer {hub.key_for(SCHOOL)}", "Content-Type": "application/fhir+json"}
    big = json.dumps({"resourceType": "Bundle", "pad": "x" * 2_100_000})
    assert httpx.post(f"{hub.base_url}/v1/referrals", content=big, headers=headers).status_code == 413
    broken = httpx.post(f"{hub.base_url}/v1/referrals", content=b"{not json", headers=headers)
    assert broken.status_code == 422
    assert broken.headers["content-type"].startswith("application/problem+json")
