"""Student pseudonyms: normalised ids, keyed HMAC, and links that survive a key rotation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from hub.adapters.crypto import HmacPseudonymiser, parse_pseudonym
from hub.adapters.keystore import KeyStore, generate_master_key
from hub.services.crypto_port import CryptoError, KeyKind, normalise_student_id
from hub.settings import KeySettings

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def resident_id(first17: str) -> str:
    """A resident ID number with its correct check character (test data, not a real person)."""
    return first17 + "10X98765432"[sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True)) % 11]


STUDENT = resident_id("31011720090101123")
OTHER = resident_id("31011720100505432")
FORMAT = re.compile(r"psn:[0-9a-f]{16}:[a-z2-7]{32}")


def _store(root: Path) -> KeyStore:
    settings = KeySettings(store_dir=root / "keys", master_key=SecretStr(generate_master_key()))
    KeyStore.initialise(settings)
    return KeyStore.open(settings)


@pytest.fixture(scope="module")
def psn(tmp_path_factory: pytest.TempPathFactory) -> HmacPseudonymiser:
    return _store(tmp_path_factory.mktemp("psn")).pseudonymiser()


def _code(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(CryptoError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return info.value.code


def test_a_pseudonym_names_its_key_and_carries_160_bits(psn: HmacPseudonymiser) -> None:
    value = psn.pseudonym(STUDENT)
    assert FORMAT.fullmatch(value)
    assert parse_pseudonym(value)[0] == psn.key_id
    assert STUDENT not in value
    assert psn.pseudonym(STUDENT) == value  # deterministic, so agencies can link


@pytest.mark.parametrize(
    "typed",
    [
        lambda i: i,
        lambda i: f" {i[:6]} {i[6:14]} {i[14:]} ",
        lambda i: f"{i[:6]}-{i[6:14]}-{i[14:]}",
        lambda i: i.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")),  # full-width input
        lambda i: i.lower(),
        lambda i: "G" + i,  # national student register number (全国学籍号)
        lambda i: "g" + i,
    ],
)
def test_the_same_child_typed_differently_gets_the_same_pseudonym(
    psn: HmacPseudonymiser, typed: object
) -> None:
    id_with_x = resident_id("31011720090101129")
    for ident in (STUDENT, id_with_x):
        assert psn.pseudonym(typed(ident)) == psn.pseudonym(ident)  # type: ignore[operator]


def test_different_children_get_different_pseudonyms(psn: HmacPseudonymiser) -> None:
    assert psn.pseudonym(STUDENT) != psn.pseudonym(OTHER)


@pytest.mark.parametrize(
    "bad",
    ["", "   ", STUDENT[:-1] + ("0" if STUDENT[-1] != "0" else "1"), STUDENT[:-1], STUDENT + "7", "学号 12"],
)
def test_mistyped_ids_are_refused_not_silently_pseudonymised(psn: HmacPseudonymiser, bad: str) -> None:
    assert _code(psn.pseudonym, bad, issuer="sj-school-yueyang") == "pseudonym-invalid-id"


def test_local_student_numbers_are_scoped_by_their_issuer(psn: HmacPseudonymiser) -> None:
    assert _code(psn.pseudonym, "2023-0417") == "pseudonym-invalid-id"
    a = psn.pseudonym("2023-0417", issuer="sj-school-yueyang")
    b = psn.pseudonym("2023-0417", issuer="sj-school-jiuting")
    assert a != b
    assert normalise_student_id(" 2023 0417", issuer="s") == "local:s:20230417"


def test_matches_checks_a_pseudonym_against_a_raw_id(psn: HmacPseudonymiser) -> None:
    value = psn.pseudonym(STUDENT)
    assert psn.matches(STUDENT, value)
    assert not psn.matches(OTHER, value)
    key_id, digest = parse_pseudonym(value)
    altered = f"psn:{key_id}:{'a' if digest[0] != 'a' else 'b'}{digest[1:]}"
    assert not psn.matches(STUDENT, altered)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "psn:abc",
        "psn:0123456789abcdef:" + "a" * 31,
        "psn:0123456789ABCDEF:" + "a" * 32,
        "pid:0123456789abcdef:" + "a" * 32,
        "psn:0123456789abcdef:" + "1" * 32,
    ],
)
def test_a_malformed_pseudonym_is_refused(psn: HmacPseudonymiser, bad: str) -> None:
    assert _code(psn.matches, STUDENT, bad) == "pseudonym-malformed"


def test_another_hubs_pseudonym_key_is_unknown(psn: HmacPseudonymiser, tmp_path: Path) -> None:
    foreign = _store(tmp_path).pseudonymiser()
    assert foreign.pseudonym(STUDENT) != psn.pseudonym(STUDENT)
    assert _code(psn.matches, STUDENT, foreign.pseudonym(STUDENT)) == "crypto-unknown-key"


def test_links_survive_a_rotation_of_the_pseudonym_key(tmp_path: Path) -> None:
    store = _store(tmp_path)
    before = store.pseudonymiser()
    # The read model indexes records by pseudonym; this one was filed before the rotation.
    records = {before.pseudonym(STUDENT): ["referral ref-2024-001"]}
    new, retired = store.rotate("hub", KeyKind.HMAC)
    after = store.pseudonymiser()
    current = after.pseudonym(STUDENT)
    assert parse_pseudonym(current)[0] == new.key_id
    assert current not in records
    # A new referral for the same child: look it up under every known key and re-file under the new one.
    every = after.pseudonyms(STUDENT)
    assert every[0] == current
    assert parse_pseudonym(every[1])[0] == retired.key_id
    linked = [r for p in every for r in records.get(p, [])]
    assert linked == ["referral ref-2024-001"]
    assert after.matches(STUDENT, next(iter(records)))  # old pseudonyms still check out


@settings(max_examples=200)
@given(
    st.from_regex(
        r"[1-6][0-9]{5}(19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}", fullmatch=True
    )
)
def test_normalisation_is_idempotent_and_keeps_ids_apart(first17: str) -> None:
    ident = resident_id(first17)
    normal = normalise_student_id(ident)
    assert normal == f"cnid:{ident}"
    assert normalise_student_id("G" + ident) == normal
    other = resident_id(first17[:-1] + str((int(first17[-1]) + 1) % 10))
    assert normalise_student_id(other) != normal


def test_an_empty_key_list_is_refused() -> None:
    assert _code(HmacPseudonymiser, []) == "crypto-unknown-key"
