"""Sealed deliveries: round trips, rotation, revocation and every tampering a recipient must notice."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from hub.adapters.crypto import X25519Opener, X25519Sealer, seal_for
from hub.adapters.keystore import KeyStore, generate_master_key
from hub.services.crypto_port import (
    CryptoError,
    KeyKind,
    SealedDelivery,
    unpack_sealed,
)
from hub.settings import KeySettings

CAMHS = "sj-camhs-1"
SCHOOL = "sj-school-yueyang"
PAYLOAD = '{"resourceType":"Patient","name":[{"text":"张小明"}],"identifier":"310117200901011236"}'.encode()


def _store(root: Path) -> KeyStore:
    settings = KeySettings(store_dir=root / "keys", master_key=SecretStr(generate_master_key()))
    KeyStore.initialise(settings)
    store = KeyStore.open(settings)
    for owner in (CAMHS, SCHOOL):
        store.generate(owner, KeyKind.X25519)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return _store(tmp_path_factory.mktemp("seal"))


@pytest.fixture(scope="module")
def sealer(store: KeyStore) -> X25519Sealer:
    return X25519Sealer(store.public_registry())


@pytest.fixture(scope="module")
def opener(store: KeyStore) -> X25519Opener:
    return store.opener(CAMHS)


@pytest.fixture(scope="module")
def sealed(sealer: X25519Sealer) -> SealedDelivery:
    return sealer.seal(PAYLOAD, referral_id="ref-001", recipient_org=CAMHS, delivery_id="dlv-001")


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def _open(opener: X25519Opener, ct: bytes, wk: bytes, **context: str) -> bytes:
    context.setdefault("referral_id", "ref-001")
    return opener.open_sealed(ct, wk, **context)


def _code(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(CryptoError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return info.value.code


# Offsets inside the ciphertext half for "ref-001"/"dlv-001"/CAMHS: magic+version+part, three
# length-prefixed strings, the 8-byte key id, then the DEK commitment, nonce, length and body.
def _layout(referral: str = "ref-001", delivery: str = "dlv-001", org: str = CAMHS) -> dict[str, int]:
    header = 4 + 3 + len(referral) + len(delivery) + len(org) + 8
    return {
        "header": header,
        "commit": header,
        "nonce": header + 16,
        "length": header + 28,
        "body": header + 32,
    }


# ------------------------------------------------------------------------------------- round trips


def test_recipient_opens_what_the_hub_sealed(sealed: SealedDelivery, opener: X25519Opener) -> None:
    assert _open(opener, sealed.ciphertext, sealed.wrapped_key, delivery_id="dlv-001") == PAYLOAD
    assert sealed.recipient_org == CAMHS
    assert sealed.recipient_key_id in opener.key_ids


def test_neither_half_holds_readable_pii(sealed: SealedDelivery) -> None:
    for half in (sealed.ciphertext, sealed.wrapped_key):
        assert "张小明".encode() not in half
        assert b"310117200901011236" not in half


def test_sealing_twice_never_repeats_ciphertext(sealer: X25519Sealer) -> None:
    a = sealer.seal(PAYLOAD, referral_id="ref-001", recipient_org=CAMHS, delivery_id="dlv-001")
    b = sealer.seal(PAYLOAD, referral_id="ref-001", recipient_org=CAMHS, delivery_id="dlv-001")
    assert a.ciphertext != b.ciphertext
    assert a.wrapped_key != b.wrapped_key


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=8192), referral=st.text(min_size=1, max_size=60))
def test_any_payload_round_trips(
    sealer: X25519Sealer, opener: X25519Opener, payload: bytes, referral: str
) -> None:
    s = sealer.seal(payload, referral_id=referral, recipient_org=CAMHS, delivery_id="dlv-x")
    assert opener.open_sealed(s.ciphertext, s.wrapped_key, referral_id=referral) == payload


def test_packed_token_round_trips(sealed: SealedDelivery, opener: X25519Opener) -> None:
    ct, wk = unpack_sealed(sealed.packed())
    assert _open(opener, ct, wk) == PAYLOAD
    assert _code(unpack_sealed, "only-one-part") == "crypto-malformed"
    assert _code(unpack_sealed, "a.b$c") == "crypto-malformed"


# ------------------------------------------------------------------------------------- tampering


@pytest.mark.parametrize("region", ["commit", "nonce", "body"])
def test_a_flipped_bit_in_the_ciphertext_is_tampering(
    sealed: SealedDelivery, opener: X25519Opener, region: str
) -> None:
    index = _layout()[region]
    ct = _flip(sealed.ciphertext, index)
    assert _code(_open, opener, ct, sealed.wrapped_key) == "crypto-tampered"


def test_a_flipped_bit_in_the_tag_is_tampering(sealed: SealedDelivery, opener: X25519Opener) -> None:
    ct = _flip(sealed.ciphertext, len(sealed.ciphertext) - 1, 0x80)
    assert _code(_open, opener, ct, sealed.wrapped_key) == "crypto-tampered"


def test_a_flipped_bit_in_the_wrapped_key_is_tampering(sealed: SealedDelivery, opener: X25519Opener) -> None:
    for index in (len(sealed.wrapped_key) - 1, len(sealed.wrapped_key) - 40, len(sealed.wrapped_key) - 79):
        wk = _flip(sealed.wrapped_key, index)
        assert _code(_open, opener, sealed.ciphertext, wk) == "crypto-tampered"


def test_a_low_order_ephemeral_key_is_tampering(sealed: SealedDelivery, opener: X25519Opener) -> None:
    # An all-zero X25519 point would give an all-zero shared secret; HPKE must refuse, not decrypt.
    wk = sealed.wrapped_key[:-80] + bytes(32) + sealed.wrapped_key[-48:]
    assert _code(_open, opener, sealed.ciphertext, wk) == "crypto-tampered"


def _relabel(data: bytes, old: str, new: str) -> bytes:
    assert len(old) == len(new)
    return data.replace(old.encode(), new.encode(), 1)


def test_relabelling_both_halves_for_another_referral_is_tampering(
    sealed: SealedDelivery, opener: X25519Opener
) -> None:
    # The attacker rewrites the bound referral id consistently in both headers.
    ct = _relabel(sealed.ciphertext, "ref-001", "ref-666")
    wk = _relabel(sealed.wrapped_key, "ref-001", "ref-666")
    assert _code(_open, opener, ct, wk, referral_id="ref-666") == "crypto-tampered"


def test_relabelling_only_the_ciphertext_is_tampering(sealed: SealedDelivery, opener: X25519Opener) -> None:
    ct = _relabel(sealed.ciphertext, "ref-001", "ref-666")
    # The halves now disagree, which is named as such before any decryption.
    assert _code(_open, opener, ct, sealed.wrapped_key, referral_id="ref-666") == "crypto-context-mismatch"


def test_opening_for_another_referral_is_a_context_mismatch(
    sealed: SealedDelivery, opener: X25519Opener
) -> None:
    assert _code(_open, opener, sealed.ciphertext, sealed.wrapped_key, referral_id="ref-002") == (
        "crypto-context-mismatch"
    )
    assert _code(_open, opener, sealed.ciphertext, sealed.wrapped_key, delivery_id="dlv-002") == (
        "crypto-context-mismatch"
    )


def test_opening_as_another_recipient_is_a_context_mismatch(
    sealed: SealedDelivery, opener: X25519Opener
) -> None:
    assert _code(_open, opener, sealed.ciphertext, sealed.wrapped_key, recipient_org=SCHOOL) == (
        "crypto-context-mismatch"
    )


def test_another_recipients_key_ring_is_the_wrong_key(sealed: SealedDelivery, store: KeyStore) -> None:
    school = store.opener(SCHOOL)
    assert _code(_open, school, sealed.ciphertext, sealed.wrapped_key) == "crypto-wrong-key"
    # Even when the caller insists the delivery is the school's.
    assert _code(_open, school, sealed.ciphertext, sealed.wrapped_key, recipient_org=CAMHS) == (
        "crypto-wrong-key"
    )


def test_a_key_ring_without_the_named_key_reports_an_unknown_key(
    sealed: SealedDelivery, tmp_path: Path
) -> None:
    stranger = _store(tmp_path).opener(CAMHS)  # same organisation id, different keys
    assert _code(_open, stranger, sealed.ciphertext, sealed.wrapped_key) == "crypto-unknown-key"


def test_readdressing_to_another_key_the_ring_holds_is_tampering(tmp_path: Path) -> None:
    store = _store(tmp_path)
    sealed = X25519Sealer(store.public_registry()).seal(
        PAYLOAD, referral_id="ref-001", recipient_org=CAMHS, delivery_id="dlv-001"
    )
    new, _ = store.rotate(CAMHS, KeyKind.X25519)  # the ring now holds both keys
    old_id, new_id = bytes.fromhex(sealed.recipient_key_id), bytes.fromhex(new.key_id)
    ct = sealed.ciphertext.replace(old_id, new_id, 1)
    wk = sealed.wrapped_key.replace(old_id, new_id, 1)
    assert _code(_open, store.opener(CAMHS), ct, wk) == "crypto-tampered"


def test_halves_of_different_deliveries_do_not_open(
    sealer: X25519Sealer, sealed: SealedDelivery, opener: X25519Opener
) -> None:
    other = sealer.seal(PAYLOAD, referral_id="ref-001", recipient_org=CAMHS, delivery_id="dlv-002")
    assert _code(_open, opener, sealed.ciphertext, other.wrapped_key) == "crypto-context-mismatch"


def test_a_resealed_key_for_the_same_delivery_does_not_open_the_first_ciphertext(
    sealer: X25519Sealer, sealed: SealedDelivery, opener: X25519Opener
) -> None:
    # Same referral, delivery and recipient, so every header agrees: only the DEK commitment tells.
    again = sealer.seal(PAYLOAD, referral_id="ref-001", recipient_org=CAMHS, delivery_id="dlv-001")
    assert _code(_open, opener, sealed.ciphertext, again.wrapped_key) == "crypto-tampered"


@pytest.mark.parametrize("half", ["ciphertext", "wrapped_key"])
def test_truncated_or_extended_input_is_malformed(
    sealed: SealedDelivery, opener: X25519Opener, half: str
) -> None:
    data = getattr(sealed, half)
    for cut in range(len(data)):
        parts = {"ciphertext": sealed.ciphertext, "wrapped_key": sealed.wrapped_key, half: data[:cut]}
        assert _code(_open, opener, parts["ciphertext"], parts["wrapped_key"]) == "crypto-malformed", cut
    parts = {"ciphertext": sealed.ciphertext, "wrapped_key": sealed.wrapped_key, half: data + b"\x00"}
    assert _code(_open, opener, parts["ciphertext"], parts["wrapped_key"]) == "crypto-malformed"


def test_swapped_halves_unknown_version_and_garbage_are_malformed(
    sealed: SealedDelivery, opener: X25519Opener
) -> None:
    assert _code(_open, opener, sealed.wrapped_key, sealed.ciphertext) == "crypto-malformed"
    assert _code(_open, opener, _flip(sealed.ciphertext, 2, 0x02), sealed.wrapped_key) == "crypto-malformed"
    assert _code(_open, opener, b"QX" + b"\x00" * 10, sealed.wrapped_key) == "crypto-malformed"
    assert _code(_open, opener, b"", b"") == "crypto-malformed"


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_is_detected(
    sealed: SealedDelivery, opener: X25519Opener, data: st.DataObject
) -> None:
    total = len(sealed.ciphertext) + len(sealed.wrapped_key)
    index = data.draw(st.integers(0, total - 1), label="index")
    mask = data.draw(st.integers(1, 255), label="mask")
    ct, wk = sealed.ciphertext, sealed.wrapped_key
    if index < len(ct):
        ct = _flip(ct, index, mask)
    else:
        wk = _flip(wk, index - len(ct), mask)
    with pytest.raises(CryptoError) as info:
        _open(opener, ct, wk)
    # Once past the plain header, nothing but authentication can notice, so it must say "tampered".
    if (
        index >= _layout()["commit"]
        and index < len(ct)
        and not (_layout()["length"] <= index < _layout()["body"])
    ):
        assert info.value.code == "crypto-tampered"


# ------------------------------------------------------------------------------------- keys


def test_an_organisation_without_a_sealing_key_cannot_be_sealed_for(sealer: X25519Sealer) -> None:
    assert _code(sealer.seal, PAYLOAD, referral_id="r", recipient_org="sj-police-9", delivery_id="d") == (
        "crypto-unknown-key"
    )


def test_sealing_needs_an_x25519_key(store: KeyStore) -> None:
    signing = store.public_registry().active("hub", KeyKind.ED25519)
    assert _code(seal_for, PAYLOAD, signing, referral_id="r", delivery_id="d") == "crypto-wrong-key"


def test_a_rotated_key_still_opens_old_deliveries(tmp_path: Path) -> None:
    store = _store(tmp_path)
    before = X25519Sealer(store.public_registry()).seal(
        PAYLOAD, referral_id="ref-1", recipient_org=CAMHS, delivery_id="dlv-1"
    )
    stale = store.opener(CAMHS)  # a worker started before the rotation
    new, retired = store.rotate(CAMHS, KeyKind.X25519)
    assert retired.key_id == before.recipient_key_id
    after = X25519Sealer(store.public_registry()).seal(
        PAYLOAD, referral_id="ref-2", recipient_org=CAMHS, delivery_id="dlv-2"
    )
    assert after.recipient_key_id == new.key_id != before.recipient_key_id
    for opener in (store.opener(CAMHS), stale):
        assert opener.open_sealed(before.ciphertext, before.wrapped_key, referral_id="ref-1") == PAYLOAD
        assert opener.open_sealed(after.ciphertext, after.wrapped_key, referral_id="ref-2") == PAYLOAD


def test_without_its_wrapped_key_a_ciphertext_stays_closed(
    sealer: X25519Sealer, opener: X25519Opener
) -> None:
    # Revocation: the hub deletes the wrapped key from its database; the ciphertext left on Kafka
    # pairs with no other wrapped key, not even a fresh seal of the same delivery.
    revoked = sealer.seal(PAYLOAD, referral_id="ref-9", recipient_org=CAMHS, delivery_id="dlv-9")
    for _ in range(3):
        other = sealer.seal(PAYLOAD, referral_id="ref-9", recipient_org=CAMHS, delivery_id="dlv-9")
        assert _code(opener.open_sealed, revoked.ciphertext, other.wrapped_key, referral_id="ref-9") == (
            "crypto-tampered"
        )
