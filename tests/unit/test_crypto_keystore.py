"""Key store on disk: master key handling, file permissions, rotation, export and the `hub keys` CLI."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from hub.adapters.crypto import PublicKeyRegistry, X25519Sealer
from hub.adapters.keystore import KeyStore, default_master_key_file, generate_master_key
from hub.cli.keys import app
from hub.services.crypto_port import CryptoError, KeyKind, KeyStatus
from hub.settings import KeySettings

ORG = "sj-camhs-1"


def _settings(root: Path, master: str | None = None, master_file: Path | None = None) -> KeySettings:
    return KeySettings(
        store_dir=root / "keys",
        master_key=SecretStr(master) if master is not None else None,
        master_key_file=master_file,
    )


def _code(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(CryptoError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return info.value.code


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------------------- master key


def test_init_without_a_master_key_writes_one_for_the_demo(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    result = KeyStore.initialise(settings)
    assert result.master_key_written == default_master_key_file(settings) == tmp_path / "master.key"
    assert _mode(tmp_path / "master.key") == 0o600
    assert {(i.owner, i.kind) for i in result.keys} == {("hub", k) for k in KeyKind}
    # A second run opens the same store with the written key and adds nothing.
    again = KeyStore.initialise(settings)
    assert not again.created_store
    assert again.master_key_written is None
    assert [i.key_id for i in again.keys] == [i.key_id for i in result.keys]


def test_init_writes_a_configured_master_key_file_that_does_not_exist_yet(tmp_path: Path) -> None:
    master_file = tmp_path / "secrets" / "qixin-master.key"
    result = KeyStore.initialise(_settings(tmp_path, master_file=master_file))
    assert result.master_key_written == master_file
    assert _mode(master_file) == 0o600
    assert not (tmp_path / "master.key").exists()
    assert KeyStore.open(_settings(tmp_path, master_file=master_file)).active("hub", KeyKind.X25519)


def test_nothing_is_readable_by_group_or_others(tmp_path: Path) -> None:
    settings = _settings(tmp_path, generate_master_key())
    KeyStore.initialise(settings)
    KeyStore.open(settings).rotate("hub", KeyKind.X25519)
    for path in settings.store_dir.rglob("*"):
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert _mode(settings.store_dir) == 0o700


def test_private_keys_are_never_written_in_clear(tmp_path: Path) -> None:
    master = generate_master_key()
    settings = _settings(tmp_path, master)
    KeyStore.initialise(settings)
    store = KeyStore.open(settings)
    secrets = [raw for kind in KeyKind for raw in store._secrets("hub", kind).values()]
    assert len(secrets) == 3
    disk = b"".join(p.read_bytes() for p in settings.store_dir.rglob("*") if p.is_file())
    for raw in secrets:
        for form in (
            raw,
            raw.hex().encode(),
            base64.b64encode(raw).rstrip(b"="),
            base64.urlsafe_b64encode(raw).rstrip(b"="),
        ):
            assert form not in disk
    assert master.encode() not in disk


def test_a_wrong_master_key_locks_the_store(tmp_path: Path) -> None:
    KeyStore.initialise(_settings(tmp_path, generate_master_key()))
    with pytest.raises(CryptoError) as info:
        KeyStore.open(_settings(tmp_path, generate_master_key()))
    assert info.value.code == "keystore-locked"
    assert "does not open the key store" in info.value.message


@pytest.mark.parametrize("master", ["short", "x" * 43])
def test_a_master_key_of_the_wrong_shape_locks_the_store(tmp_path: Path, master: str) -> None:
    KeyStore.initialise(_settings(tmp_path, generate_master_key()))
    assert _code(KeyStore.open, _settings(tmp_path, master)) == "keystore-locked"


def test_a_missing_master_key_locks_the_store_and_says_what_to_set(tmp_path: Path) -> None:
    master_file = tmp_path / "secret" / "master.key"
    master_file.parent.mkdir()
    master_file.write_text(generate_master_key())
    KeyStore.initialise(_settings(tmp_path, master_file=master_file))
    with pytest.raises(CryptoError) as info:
        KeyStore.open(_settings(tmp_path))
    assert info.value.code == "keystore-locked"
    assert "HUB_KEYS__MASTER_KEY" in info.value.message
    # init refuses to mint a new master key for an existing store it could not open
    assert _code(KeyStore.initialise, _settings(tmp_path)) == "keystore-locked"
    master_file.write_text("")
    assert _code(KeyStore.open, _settings(tmp_path, master_file=master_file)) == "keystore-locked"
    assert _code(KeyStore.open, _settings(tmp_path, master_file=tmp_path / "nope")) == "keystore-locked"


def test_an_uninitialised_store_is_locked(tmp_path: Path) -> None:
    assert _code(KeyStore.open, _settings(tmp_path, generate_master_key())) == "keystore-locked"


def test_a_passphrase_master_key_uses_scrypt(tmp_path: Path) -> None:
    passphrase = "松江 minors' hub passphrase 2024"
    KeyStore.initialise(_settings(tmp_path, passphrase))
    assert json.loads((tmp_path / "keys" / "keystore.json").read_text())["kdf"]["name"] == "scrypt"
    assert KeyStore.open(_settings(tmp_path, passphrase)).active("hub", KeyKind.HMAC) is not None
    assert _code(KeyStore.open, _settings(tmp_path, passphrase + "!")) == "keystore-locked"
    assert _code(KeyStore.initialise, _settings(tmp_path / "b", "too short")) == "keystore-locked"


# ------------------------------------------------------------------------------------- key files


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    settings = _settings(tmp_path, generate_master_key())
    KeyStore.initialise(settings)
    return KeyStore.open(settings)


def test_an_altered_key_file_is_reported_as_corrupt(store: KeyStore, tmp_path: Path) -> None:
    info = store.active("hub", KeyKind.HMAC)
    assert info is not None
    path = tmp_path / "keys" / "hub" / "hmac" / f"{info.key_id}.json"
    document = json.loads(path.read_text())
    private = bytearray(base64.urlsafe_b64decode(document["private"] + "=="))
    private[20] ^= 1
    document["private"] = base64.urlsafe_b64encode(bytes(private)).rstrip(b"=").decode()
    path.write_text(json.dumps(document))
    assert _code(store.pseudonymiser) == "keystore-corrupt"


def test_a_key_file_moved_to_another_owner_is_reported_as_corrupt(store: KeyStore, tmp_path: Path) -> None:
    info = store.active("hub", KeyKind.X25519)
    assert info is not None
    source = tmp_path / "keys" / "hub" / "x25519" / f"{info.key_id}.json"
    target = tmp_path / "keys" / ORG / "x25519" / source.name
    target.parent.mkdir(parents=True)
    document = json.loads(source.read_text())
    document["owner"] = ORG
    target.write_text(json.dumps(document))
    assert _code(store.opener, ORG) == "keystore-corrupt"


def test_an_unparseable_key_file_is_reported_as_corrupt(store: KeyStore, tmp_path: Path) -> None:
    (tmp_path / "keys" / "hub" / "hmac" / "0123456789abcdef.json").write_text("{not json")
    assert _code(store.list_keys) == "keystore-corrupt"


def test_generate_refuses_a_second_active_key_and_rotate_needs_a_first(store: KeyStore) -> None:
    assert _code(store.generate, "hub", KeyKind.ED25519) == "keystore-conflict"
    assert _code(store.rotate, ORG, KeyKind.ED25519) == "crypto-unknown-key"
    assert _code(store.signer, ORG) == "crypto-unknown-key"
    assert _code(store.pseudonymiser, ORG) == "crypto-unknown-key"


@pytest.mark.parametrize("owner", ["../etc", "", "a/b", ".hidden", "x" * 129])
def test_owner_ids_cannot_escape_the_store(store: KeyStore, owner: str) -> None:
    assert _code(store.generate, owner, KeyKind.X25519) == "keystore-invalid"


def test_rotation_retires_the_old_key_and_journals_both(store: KeyStore, tmp_path: Path) -> None:
    first = store.generate(ORG, KeyKind.X25519)
    new, retired = store.rotate(ORG, KeyKind.X25519)
    assert retired.key_id == first.key_id
    assert retired.status == KeyStatus.RETIRED
    assert retired.retired
    assert store.active(ORG, KeyKind.X25519) == new
    assert [i.key_id for i in store.list_keys(ORG)] == [new.key_id, first.key_id]
    journal = [json.loads(line) for line in (tmp_path / "keys" / "journal.jsonl").read_text().splitlines()]
    assert journal[-1] == {
        "at": journal[-1]["at"],
        "action": "rotated",
        "owner": ORG,
        "kind": "x25519",
        "key_id": new.key_id,
        "previous": first.key_id,
    }


def test_exported_public_keys_seal_for_the_owner(store: KeyStore) -> None:
    store.generate(ORG, KeyKind.X25519)
    store.generate(ORG, KeyKind.ED25519)
    document = json.loads(json.dumps(store.export_public()))
    assert {k["kind"] for k in document["keys"]} == {"x25519", "ed25519"}  # hmac is secret
    assert all(set(k) == {"owner", "kind", "key_id", "status", "created", "public"} for k in document["keys"])
    sealed = X25519Sealer(PublicKeyRegistry.from_export(document)).seal(
        b"x", referral_id="r", recipient_org=ORG, delivery_id="d"
    )
    assert store.opener(ORG).open_sealed(sealed.ciphertext, sealed.wrapped_key, referral_id="r") == b"x"
    assert [k["owner"] for k in store.export_public(ORG)["keys"]] == [ORG, ORG]


# ------------------------------------------------------------------------------------- CLI


def test_the_cli_initialises_rotates_lists_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_KEYS__STORE_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("HUB_KEYS__MASTER_KEY", raising=False)
    monkeypatch.delenv("HUB_KEYS__MASTER_KEY_FILE", raising=False)
    runner = CliRunner()

    init = runner.invoke(app, ["init"])
    assert init.exit_code == 0, init.output
    assert str(tmp_path / "master.key") in init.output

    generated = runner.invoke(app, ["generate", "--owner", ORG, "--kind", "x25519"])
    assert generated.exit_code == 0
    assert ORG in generated.output
    twice = runner.invoke(app, ["generate", "--owner", ORG, "--kind", "x25519"])
    assert twice.exit_code == 1
    assert "keystore-conflict" in twice.output

    rotated = runner.invoke(app, ["rotate", "--owner", ORG, "--kind", "x25519"])
    assert rotated.exit_code == 0
    assert "retired" in rotated.output

    listed = runner.invoke(app, ["list", "--owner", ORG])
    assert listed.exit_code == 0
    assert listed.output.count(ORG) == 2

    exported = runner.invoke(app, ["export-public", "--owner", ORG])
    assert exported.exit_code == 0
    assert len(json.loads(exported.output)["keys"]) == 2
    out = tmp_path / "public.json"
    assert runner.invoke(app, ["export-public", "-o", str(out)]).exit_code == 0
    assert {k["owner"] for k in json.loads(out.read_text())["keys"]} == {"hub", ORG}

    monkeypatch.setenv("HUB_KEYS__MASTER_KEY", generate_master_key())
    locked = runner.invoke(app, ["list"])
    assert locked.exit_code == 1
    assert "keystore-locked" in locked.output
