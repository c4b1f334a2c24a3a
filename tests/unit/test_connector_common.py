"""Shared connector machinery: outbox resume, retries and backoff, bad rows, dead letters, Kafka envelope."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from connectors.common import golden
from connectors.common.bundle import build_referral, encode
from connectors.common.keys import ConnectorKeys, load_signing_key, write_signing_key
from connectors.common.outbox import Outbox
from connectors.common.runner import Context, run_import
from connectors.common.settings import ConnectorSettings
from connectors.common.transport import HttpsTransport, KafkaTransport, Outcome, Outgoing
from connectors.school.connector import CONNECTOR as SCHOOL
from hub.adapters.crypto import Ed25519Verifier, PublicKeyRegistry
from hub.adapters.keystore import KeyStore
from hub.services.crypto_port import HUB_OWNER, KeyKind, SignaturePurpose, unpack_sealed
from hub.settings import KeySettings
from schemas.envelope import InboundSubmission

SAMPLE = (
    Path(__file__).resolve().parents[2] / "connectors" / "school" / "samples" / "screening-2026-11-20.csv"
)
SCHOOL_ID = "school-songjiang-no2-middle"


def _parsed():  # type: ignore[no-untyped-def]
    return SCHOOL.read(SAMPLE, golden.read_context(SCHOOL_ID, "school"))


class FakeHub:
    """HttpsTransport's surface: answers scripted per call, records the bodies it was sent."""

    def __init__(self, script: list[Outcome] | None = None) -> None:
        self.script = list(script or [])
        self.bodies: list[bytes] = []

    def submit(self, out: Outgoing) -> Outcome:
        self.bodies.append(out.body)
        if self.script:
            return self.script.pop(0)
        return Outcome(True, referral_id=out.referral_id)

    def change_status(self, change):  # type: ignore[no-untyped-def]
        return Outcome(True)


def _ctx(tmp_path: Path, hub: FakeHub) -> Context:
    settings = ConnectorSettings(agency=SCHOOL_ID, state_dir=tmp_path, concurrency=1)
    ctx = golden.read_context(SCHOOL_ID, "school")
    return Context(settings, ctx.sender, Outbox(settings.outbox_file()), https=hub, now=lambda: golden.NOW)  # type: ignore[arg-type]


def test_rerun_sends_nothing_again(tmp_path: Path) -> None:
    hub = FakeHub()
    first = run_import(_parsed(), _ctx(tmp_path, hub), source=SAMPLE.name)
    assert first.new == len(hub.bodies) > 0
    again = run_import(_parsed(), _ctx(tmp_path, hub), source=SAMPLE.name)
    assert again.new == 0
    assert again.already == first.new
    assert len(hub.bodies) == first.new


def test_a_crash_between_send_and_mark_resends_the_same_bytes(tmp_path: Path) -> None:
    parsed = _parsed()
    ctx = _ctx(tmp_path, FakeHub())
    item = parsed.items[0]
    assert ctx.outbox is not None
    at = ctx.outbox.begin(item.record_id, "referral", item.draft.message_id, "x", 2, golden.AUTHORED)
    sent_before_crash = encode(build_referral(item.draft, at))  # the hub got these bytes; no mark_sent
    hub = FakeHub()
    later = replace(ctx, https=hub, now=lambda: golden.NOW.replace(hour=23))  # type: ignore[arg-type]
    run_import(parsed, later, source=SAMPLE.name)
    assert hub.bodies[0] == sent_before_crash  # same message id, same authoredOn: the hub dedupes
    assert ctx.outbox.get(item.record_id).sends == 1  # type: ignore[union-attr]


def test_temporary_failures_are_dead_lettered_and_retried_on_the_next_run(tmp_path: Path) -> None:
    parsed = _parsed()
    down = Outcome(False, status=503, code="unavailable", detail="broker down", exhausted=True)
    hub = FakeHub([down])
    report = run_import(parsed, _ctx(tmp_path, hub), source=SAMPLE.name)
    assert report.dead_letters == 1
    assert report.new == len(parsed.items) - 1
    assert not any(b.record_id == parsed.items[0].record_id for b in report.bad_rows)  # not the row's fault
    again = run_import(_parsed(), _ctx(tmp_path, FakeHub()), source=SAMPLE.name)
    assert again.new == 1


def test_a_422_is_a_bad_row_and_a_dead_letter_without_personal_data(tmp_path: Path) -> None:
    parsed = _parsed()
    refused = Outcome(
        False,
        status=422,
        code="profile-invalid",
        detail="breaks the profile",
        errors=(
            {"path": "$.entry[3].resource.birthDate", "rule": "date-future", "message": "in the future"},
        ),
    )
    report = run_import(parsed, _ctx(tmp_path, FakeHub([refused])), source=SAMPLE.name)
    [bad] = [b for b in report.bad_rows if b.record_id == parsed.items[0].record_id]
    assert bad.row == parsed.items[0].rows[0]
    assert bad.field == "$.entry[3].resource.birthDate"
    letters = (tmp_path / f"{SCHOOL_ID}.deadletter.jsonl").read_text(encoding="utf-8")
    entry = json.loads(letters.splitlines()[0])
    assert set(entry) == {"at", "agency", "source", "kind", "row", "field", "code", "reason", "record_id"}
    draft = parsed.items[0].draft
    assert draft.student.name["text"] not in letters
    assert draft.student.pseudonym not in letters


def test_https_retries_5xx_and_connection_errors_but_not_4xx() -> None:
    calls: list[int] = []
    answers: list[httpx.Response | Exception] = [
        httpx.ConnectError("refused"),
        httpx.Response(503),
        httpx.Response(202, json={"referral_id": "ref-1"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    settings = ConnectorSettings(agency=SCHOOL_ID, api_key="k", max_attempts=5)
    https = HttpsTransport(settings, None, sleep=lambda s: None)
    https._client = httpx.Client(base_url="http://hub", transport=httpx.MockTransport(handler))
    assert https.submit(Outgoing("r", "mh-r", b"{}", "ref-1")) == Outcome(
        True, referral_id="ref-1", status=202, body={"referral_id": "ref-1"}
    )
    assert len(calls) == 3
    answers[:] = [httpx.Response(422, json={"code": "profile-invalid", "errors": []}), httpx.Response(202)]
    outcome = https.submit(Outgoing("r", "mh-r", b"{}", "ref-1"))
    assert outcome.status == 422
    assert not outcome.exhausted
    assert len(calls) == 4


def test_kafka_envelope_opens_for_the_hub_and_verifies(tmp_path: Path) -> None:
    keys = KeySettings(store_dir=tmp_path / "keys")
    KeyStore.initialise(keys)
    store = KeyStore.open(keys)
    store.ensure(SCHOOL_ID, KeyKind.ED25519)
    settings = ConnectorSettings(agency=SCHOOL_ID, hub_var_dir=tmp_path)
    connector_keys = ConnectorKeys(settings)
    transport = KafkaTransport.__new__(KafkaTransport)
    from hub.adapters.crypto import X25519Sealer

    transport._settings = settings
    transport._signer = connector_keys.signer
    transport._sealer = X25519Sealer(connector_keys.hub_registry)
    body = b'{"resourceType":"Bundle"}'
    out = Outgoing("abc", "mh-abc", body, "ref-abc")
    record = InboundSubmission.model_validate_json(transport.envelope(out))
    ciphertext, wrapped = unpack_sealed(record.sealed_bundle)
    opened = store.opener(HUB_OWNER).open_sealed(
        ciphertext, wrapped, referral_id="sub-abc", delivery_id="inbound-sub-abc", recipient_org=HUB_OWNER
    )
    assert opened == body
    Ed25519Verifier(store.public_registry()).verify(
        body, record.signature, signer=SCHOOL_ID, purpose=SignaturePurpose.SUBMISSION
    )


def test_signing_key_file_pem_or_raw(tmp_path: Path) -> None:
    kid, public = write_signing_key(tmp_path / "school.pem")
    key = load_signing_key(tmp_path / "school.pem")
    raw = tmp_path / "school.key"
    raw.write_bytes(key.private_bytes_raw())
    assert load_signing_key(raw).public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    settings = ConnectorSettings(agency=SCHOOL_ID, signing_key_file=tmp_path / "school.pem")
    signer = ConnectorKeys(settings).signer
    assert signer.key_id == kid
    registry = PublicKeyRegistry.from_pairs(KeyKind.ED25519, {SCHOOL_ID: [(kid, public)]})
    Ed25519Verifier(registry).verify(
        b"x",
        signer.sign(b"x", purpose=SignaturePurpose.SUBMISSION),
        signer=SCHOOL_ID,
        purpose=SignaturePurpose.SUBMISSION,
    )


def test_settings_read_the_qixin_connector_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QIXIN_CONNECTOR_AGENCY", "police-songjiang")
    monkeypatch.setenv("QIXIN_CONNECTOR_TRANSPORT", "kafka")
    monkeypatch.setenv("QIXIN_CONNECTOR_HUB_VAR_DIR", "/srv/hub")
    settings = ConnectorSettings()
    assert (settings.agency, settings.transport) == ("police-songjiang", "kafka")
    assert settings.keystore_dir == Path("/srv/hub/keys")
    assert settings.master_key_file == Path("/srv/hub/master.key")
