"""Ed25519 signatures: connectors sign submissions, the hub verifies them and signs its deliveries."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from hub.adapters.crypto import (
    Ed25519Signer,
    Ed25519Verifier,
    PublicKeyRegistry,
    key_id_for_public,
)
from hub.adapters.keystore import KeyStore, generate_master_key
from hub.services.crypto_port import (
    HUB_OWNER,
    CryptoError,
    KeyKind,
    SignaturePurpose,
    decode_b64url,
    encode_b64url,
)
from hub.settings import KeySettings

SCHOOL = "sj-school-yueyang"
POLICE = "sj-police-fangsong"
SUBMISSION = SignaturePurpose.SUBMISSION
BODY = orjson.dumps(
    {
        "resourceType": "Bundle",
        "type": "message",
        "id": "b-1",
        "entry": [
            {"resource": {"resourceType": "MessageHeader", "eventCoding": {"code": "referral-request"}}}
        ],
    }
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    root = tmp_path_factory.mktemp("sig")
    settings = KeySettings(store_dir=root / "keys", master_key=SecretStr(generate_master_key()))
    KeyStore.initialise(settings)
    store = KeyStore.open(settings)
    for owner in (SCHOOL, POLICE):
        store.generate(owner, KeyKind.ED25519)
    return store


@pytest.fixture(scope="module")
def registry(store: KeyStore) -> PublicKeyRegistry:
    # What the directory would hold: the exported public keys, not the store itself.
    return PublicKeyRegistry.from_export(store.export_public())


@pytest.fixture(scope="module")
def verifier(registry: PublicKeyRegistry) -> Ed25519Verifier:
    return Ed25519Verifier(registry)


def _code(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(CryptoError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return info.value.code


def test_the_hub_verifies_a_connectors_submission(store: KeyStore, verifier: Ed25519Verifier) -> None:
    signer = store.signer(SCHOOL)
    token = signer.sign(BODY, purpose=SUBMISSION)
    assert token.startswith(f"ed25519:{signer.key_id}:")
    assert verifier.verify(BODY, token, signer=SCHOOL, purpose=SUBMISSION) == signer.key_id


def test_deliveries_carry_the_hubs_signature(store: KeyStore, verifier: Ed25519Verifier) -> None:
    token = store.signer(HUB_OWNER).sign(b"ciphertext half", purpose=SignaturePurpose.DELIVERY)
    assert verifier.verify(b"ciphertext half", token, signer=HUB_OWNER, purpose=SignaturePurpose.DELIVERY)


@pytest.mark.parametrize("signature", [None, "", "   "])
def test_a_missing_signature_is_refused(verifier: Ed25519Verifier, signature: str | None) -> None:
    assert _code(verifier.verify, BODY, signature, signer=SCHOOL, purpose=SUBMISSION) == "signature-missing"


@pytest.mark.parametrize(
    "signature",
    [
        "not-a-signature",
        "rsa:0123456789abcdef:AAAA",
        "ed25519:0123456789ABCDEF:" + encode_b64url(b"\x00" * 64),
        "ed25519:0123456789abcdef:" + encode_b64url(b"\x00" * 63),
        "ed25519:0123456789abcdef:not base64!",
        "ed25519:0123456789abcdef",
    ],
)
def test_a_malformed_signature_is_refused(verifier: Ed25519Verifier, signature: str) -> None:
    assert _code(verifier.verify, BODY, signature, signer=SCHOOL, purpose=SUBMISSION) == "signature-malformed"


def test_a_signature_by_another_organisations_key_is_refused(
    store: KeyStore, verifier: Ed25519Verifier
) -> None:
    token = store.signer(POLICE).sign(BODY, purpose=SUBMISSION)
    with pytest.raises(CryptoError) as info:
        verifier.verify(BODY, token, signer=SCHOOL, purpose=SUBMISSION)
    assert info.value.code == "signature-unknown-key"
    assert POLICE in info.value.message  # operators see whose key it really was


def test_claiming_another_organisations_key_id_is_refused(store: KeyStore, verifier: Ed25519Verifier) -> None:
    school_key = store.signer(SCHOOL).key_id
    police_sig = store.signer(POLICE).sign(BODY, purpose=SUBMISSION).split(":")[2]
    forged = f"ed25519:{school_key}:{police_sig}"
    assert _code(verifier.verify, BODY, forged, signer=SCHOOL, purpose=SUBMISSION) == "signature-invalid"


def test_a_signature_made_for_another_purpose_is_refused(store: KeyStore, verifier: Ed25519Verifier) -> None:
    token = store.signer(HUB_OWNER).sign(BODY, purpose=SignaturePurpose.AUDIT_CHECKPOINT)
    assert _code(verifier.verify, BODY, token, signer=HUB_OWNER, purpose=SignaturePurpose.DELIVERY) == (
        "signature-invalid"
    )


def test_a_flipped_bit_in_the_signature_is_refused(store: KeyStore, verifier: Ed25519Verifier) -> None:
    token = store.signer(SCHOOL).sign(BODY, purpose=SUBMISSION)
    prefix, key_id, value = token.split(":")
    raw = bytearray(decode_b64url(value))
    raw[10] ^= 0x04
    tampered = f"{prefix}:{key_id}:{encode_b64url(bytes(raw))}"
    assert _code(verifier.verify, BODY, tampered, signer=SCHOOL, purpose=SUBMISSION) == "signature-invalid"


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_change_to_the_signed_body_is_refused(
    store: KeyStore, verifier: Ed25519Verifier, data: st.DataObject
) -> None:
    token = store.signer(SCHOOL).sign(BODY, purpose=SUBMISSION)
    index = data.draw(st.integers(0, len(BODY) - 1))
    mask = data.draw(st.integers(1, 255))
    body = BODY[:index] + bytes([BODY[index] ^ mask]) + BODY[index + 1 :]
    assert _code(verifier.verify, body, token, signer=SCHOOL, purpose=SUBMISSION) == "signature-invalid"
    # Re-serialising the same JSON differently is also a change: the exact bytes are what is signed.
    pretty = orjson.dumps(orjson.loads(BODY), option=orjson.OPT_INDENT_2)
    assert _code(verifier.verify, pretty, token, signer=SCHOOL, purpose=SUBMISSION) == "signature-invalid"


def test_a_rotated_signing_key_still_verifies_old_submissions(tmp_path: Path) -> None:
    settings = KeySettings(store_dir=tmp_path / "keys", master_key=SecretStr(generate_master_key()))
    KeyStore.initialise(settings, owner=SCHOOL)
    store = KeyStore.open(settings)
    old_token = store.signer(SCHOOL).sign(BODY, purpose=SUBMISSION)
    new, retired = store.rotate(SCHOOL, KeyKind.ED25519)
    new_token = store.signer(SCHOOL).sign(BODY, purpose=SUBMISSION)
    verifier = Ed25519Verifier(PublicKeyRegistry.from_export(store.export_public()))
    assert verifier.verify(BODY, old_token, signer=SCHOOL, purpose=SUBMISSION) == retired.key_id
    assert verifier.verify(BODY, new_token, signer=SCHOOL, purpose=SUBMISSION) == new.key_id
    # Once the directory drops the retired key, the old signature no longer verifies.
    only_new = PublicKeyRegistry.from_pairs(KeyKind.ED25519, {SCHOOL: [(new.key_id, new.public or b"")]})
    assert _code(Ed25519Verifier(only_new).verify, BODY, old_token, signer=SCHOOL, purpose=SUBMISSION) == (
        "signature-unknown-key"
    )


def test_the_directory_mapping_is_checked_against_its_key_ids() -> None:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    good = PublicKeyRegistry.from_pairs(KeyKind.ED25519, {SCHOOL: [(key_id_for_public(public), public)]})
    token = Ed25519Signer(SCHOOL, private).sign(BODY, purpose=SUBMISSION)
    assert Ed25519Verifier(good).verify(BODY, token, signer=SCHOOL, purpose=SUBMISSION)
    with pytest.raises(CryptoError) as info:
        PublicKeyRegistry.from_pairs(KeyKind.ED25519, {SCHOOL: [("0123456789abcdef", public)]})
    assert info.value.code == "keystore-invalid"
    with pytest.raises(CryptoError):
        PublicKeyRegistry.from_pairs(KeyKind.ED25519, {SCHOOL: [(key_id_for_public(b"x"), b"x")]})


def test_keys_registered_in_the_directory_verify_and_seal(store: KeyStore) -> None:
    exported = {(k["owner"], k["kind"]): k for k in store.export_public(SCHOOL)["keys"]}
    signing = exported[(SCHOOL, "ed25519")]
    school = SimpleNamespace(
        id=SCHOOL,
        public_keys=(
            SimpleNamespace(kid=signing["key_id"], use="sign", alg="Ed25519", key=signing["public"]),
        ),
    )
    registry = PublicKeyRegistry.from_directory([school])
    token = store.signer(SCHOOL).sign(BODY, purpose=SUBMISSION)
    assert Ed25519Verifier(registry).verify(BODY, token, signer=SCHOOL, purpose=SUBMISSION)
    wrong = SimpleNamespace(
        id=SCHOOL,
        public_keys=(
            SimpleNamespace(kid=signing["key_id"], use="seal", alg="Ed25519", key=signing["public"]),
        ),
    )
    assert _code(PublicKeyRegistry.from_directory, [wrong]) == "keystore-invalid"
