"""What travels is sealed: the recipient's copy opens only with its key and holds only what consent allows."""

from __future__ import annotations

import json

import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition

from hub.adapters.sealing import HubSealing
from hub.services.crypto_port import CryptoWrongKey, decode_b64url
from hub.services.port import StoredSeal
from tests.support.hub import RunningHub, sample, with_new_message_id

SCHOOL = "school-songjiang-no2-middle"
CAMHS = "camhs-songjiang-mhc"
STUDENT_NAME = "张小明"
GUARDIAN_PHONE = "138-0000-0001"


def _topic_bytes(hub: RunningHub, name: str) -> bytes:
    topic = hub.prefix + name
    consumer = KafkaConsumer(bootstrap_servers=hub.env["HUB_KAFKA__BOOTSTRAP"], consumer_timeout_ms=3000)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    data = b"".join(record.value for record in consumer)
    consumer.close()
    return data


def _seal(hub: RunningHub, referral_id: str) -> StoredSeal:
    engine = sa.create_engine(hub.env["HUB_DATABASE_URL"])
    with engine.connect() as conn:
        row = (
            conn.execute(sa.text("SELECT * FROM delivery_keys WHERE referral_id = :r"), {"r": referral_id})
            .mappings()
            .one()
        )
    engine.dispose()
    return StoredSeal(
        **{
            k: row[k]
            for k in (
                "delivery_id",
                "referral_id",
                "recipient_org",
                "recipient_key_id",
                "ciphertext",
                "wrapped_key",
                "signature",
                "created_at",
            )
        },
        consent_ids=tuple(row["consent_ids"]),
    )


def test_the_recipient_copy_holds_only_consented_categories_and_nothing_is_readable_in_transit(
    hub: RunningHub,
) -> None:
    referral_id = hub.submit(SCHOOL, with_new_message_id(sample("referral-school-camhs-high.json"))).json()[
        "referral_id"
    ]
    [item] = hub.wait_inbox(CAMHS, referral_id)
    assert set(item["categories"]) >= {"screening", "risk", "contact"}
    assert not set(item["categories"]) & {"family", "case", "clinical"}

    # Nothing readable on the topics: not the name, not the guardian's phone.
    for topic in ("referrals.submitted", "deliveries.created"):
        raw = _topic_bytes(hub, topic)
        assert raw, topic
        for secret in (STUDENT_NAME, GUARDIAN_PHONE):
            assert secret.encode() not in raw and json.dumps(secret).encode() not in raw

    seal = _seal(hub, referral_id)
    sealing = HubSealing(hub.key_store(), demo_custody=False)
    view = json.loads(sealing.open_delivery(seal))
    kinds = [e["resource"]["resourceType"] for e in view["entry"]]
    assert "Patient" in kinds and "ServiceRequest" in kinds
    assert all(e["resource"].get("id") != "obs-family-0001" for e in view["entry"])
    assert GUARDIAN_PHONE in json.dumps(view, ensure_ascii=False)  # contact was consented

    # Another agency's key cannot open it.
    other = hub.key_store().opener("police-songjiang")
    try:
        other.open_sealed(
            decode_b64url(seal.ciphertext), decode_b64url(seal.wrapped_key or ""), referral_id=referral_id
        )
    except CryptoWrongKey:
        pass
    else:
        raise AssertionError("a police key opened a CAMHS delivery")


def test_a_bundle_near_the_profiles_size_limit_is_accepted_and_delivered_whole(hub: RunningHub) -> None:
    # The profile admits Bundles up to 1,000,000 bytes; sealed inside its intake envelope such a
    # Bundle is ≈ 1.34 MB, past Kafka's default 1 MiB record limit, so every topic and producer on
    # its way (API, worker, dead letters) must take larger records.
    bundle = with_new_message_id(sample("referral-school-camhs-high.json"))
    service_request = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )
    note = service_request["note"][0]
    base = len(json.dumps(bundle, ensure_ascii=False).encode())
    pad = "观察记录。" * ((980_000 - base) // len("观察记录。".encode()))
    note["text"] += pad
    body = json.dumps(bundle, ensure_ascii=False).encode()
    assert 950_000 < len(body) <= 1_000_000

    answer = hub.submit(SCHOOL, bundle)
    assert answer.status_code == 202, answer.text
    referral_id = answer.json()["referral_id"]
    hub.wait_inbox(CAMHS, referral_id)

    view = json.loads(HubSealing(hub.key_store(), demo_custody=False).open_delivery(_seal(hub, referral_id)))
    notes = [
        n["text"]
        for e in view["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
        for n in e["resource"].get("note", [])
    ]
    assert any(text.endswith(pad) for text in notes)  # the recipient's copy holds the whole note
