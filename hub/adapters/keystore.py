"""Key store on disk: private keys sealed under a master key, key ids, rotation, public export.

Layout under ``KeySettings.store_dir`` (directories 0700, files 0600)::

    keystore.json                      format, KDF and salt, an AES-GCM check value for the master key
    journal.jsonl                      one line per key change (for the audit trail to pick up)
    <owner>/<kind>/<key id>.json       metadata + public key + private key sealed with AES-256-GCM

The key-encryption key is derived once per process from the master key (HKDF-SHA256 for a random
32-byte master key, scrypt for a passphrase); private keys are decrypted once per owner and cached,
so sealing, opening, signing and pseudonymising never touch the disk or a KDF.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hub.adapters.crypto import (
    Ed25519Signer,
    HmacPseudonymiser,
    PublicKeyRegistry,
    X25519Opener,
    key_id_for_public,
    key_id_for_secret,
)
from hub.services.crypto_port import (
    HUB_OWNER,
    CryptoMalformed,
    CryptoUnknownKey,
    KeyInfo,
    KeyKind,
    KeyStatus,
    KeystoreConflict,
    KeystoreCorrupt,
    KeystoreInvalid,
    KeystoreLocked,
    PublicKey,
    decode_b64url,
    encode_b64url,
)
from hub.settings import KeySettings

STORE_FORMAT = "qixin-keystore/1"
KEY_FORMAT = "qixin-key/1"
EXPORT_FORMAT = "qixin-public-keys/1"
_CHECK_PLAINTEXT = b"qixin keystore master key check"
_CHECK_AAD = b"qixin/keystore/check/v1"
_KEK_INFO = b"qixin/keystore/kek/v1"
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
_MIN_PASSPHRASE = 16


def generate_master_key() -> str:
    """A fresh random master key: 32 bytes, base64url (43 characters)."""
    return encode_b64url(secrets.token_bytes(32))


def default_master_key_file(settings: KeySettings) -> Path:
    """Where ``hub keys init`` writes a master key when none is configured (the demo's default)."""
    return settings.store_dir.parent / "master.key"


@dataclass(frozen=True)
class InitResult:
    store_dir: Path
    created_store: bool
    master_key_written: Path | None
    keys: list[KeyInfo]


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _check_owner(owner: str) -> str:
    if not isinstance(owner, str) or not _OWNER.fullmatch(owner):
        raise KeystoreInvalid(
            f"owner {owner!r} is not a valid organisation id (letters, digits, '.', '_', '-'; ≤128)"
        )
    return owner


def _kind(kind: KeyKind | str) -> KeyKind:
    try:
        return KeyKind(kind)
    except ValueError:
        raise KeystoreInvalid(f"unknown key kind {kind!r}; one of x25519, ed25519, hmac") from None


def _write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with a 0600 file holding ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # the umask cannot widen this, but an odd filesystem default might
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _mkdir_private(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _read_master(settings: KeySettings) -> tuple[str, str]:
    """(master key text, where it came from); raises KeystoreLocked when none is configured."""
    if settings.master_key is not None and settings.master_key.get_secret_value().strip():
        return settings.master_key.get_secret_value().strip(), "HUB_KEYS__MASTER_KEY"
    path = settings.master_key_file or default_master_key_file(settings)
    if settings.master_key_file is None and not path.exists():
        raise KeystoreLocked(
            "no master key configured: set HUB_KEYS__MASTER_KEY or HUB_KEYS__MASTER_KEY_FILE, "
            f"or run `hub keys init` to create one at {path}"
        )
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeystoreLocked(f"cannot read the master key file {path}: {exc.strerror}") from None
    if not text:
        raise KeystoreLocked(f"the master key file {path} is empty")
    return text, str(path)


def _master_bytes(text: str) -> bytes | None:
    """The 32 raw bytes of a generated master key, or None when the text is a passphrase."""
    try:
        raw = decode_b64url(text)
    except CryptoMalformed:
        return None
    return raw if len(raw) == 32 else None


def _derive_kek(master_text: str, kdf: dict[str, Any], source: str) -> bytes:
    salt = decode_b64url(kdf["salt"])
    if kdf["name"] == "hkdf-sha256":
        raw = _master_bytes(master_text)
        if raw is None:
            raise KeystoreLocked(
                f"the master key from {source} is not 32 base64url bytes, but this key store was "
                "initialised with a generated master key"
            )
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_KEK_INFO).derive(raw)
    if kdf["name"] == "scrypt":
        return Scrypt(salt=salt, length=32, n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"])).derive(
            master_text.encode("utf-8")
        )
    raise KeystoreCorrupt(f"keystore.json names an unknown KDF {kdf['name']!r}")


def _new_kdf(master_text: str, source: str) -> dict[str, Any]:
    salt = encode_b64url(secrets.token_bytes(16))
    if _master_bytes(master_text) is not None:
        return {"name": "hkdf-sha256", "salt": salt}
    if len(master_text) < _MIN_PASSPHRASE:
        raise KeystoreLocked(
            f"the master key from {source} is neither a generated key (32 base64url bytes) nor a "
            f"passphrase of at least {_MIN_PASSPHRASE} characters"
        )
    return {"name": "scrypt", "salt": salt, **_SCRYPT}


def _key_aad(owner: str, kind: KeyKind, key_id: str) -> bytes:
    # Binding owner, kind and id means a key file copied into another owner's directory fails to open.
    return f"qixin/key/v1|{owner}|{kind.value}|{key_id}".encode()


class KeyStore:
    """Owners' keys on disk. Build with ``KeyStore.open(settings)``; it holds the KEK in memory."""

    def __init__(self, store_dir: Path, kek: bytes) -> None:
        self._dir = store_dir
        self._aead = AESGCM(kek)
        self._private: dict[tuple[str, KeyKind], dict[str, bytes]] = {}

    # ---------------------------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, settings: KeySettings) -> KeyStore:
        """Open an initialised store; KeystoreLocked if the master key is missing or wrong."""
        meta_path = settings.store_dir / "keystore.json"
        if not meta_path.exists():
            raise KeystoreLocked(f"no key store at {settings.store_dir}: run `hub keys init`")
        master, source = _read_master(settings)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != STORE_FORMAT:
                raise KeystoreCorrupt(f"{meta_path} has format {meta.get('format')!r}, not {STORE_FORMAT}")
            kek = _derive_kek(master, meta["kdf"], source)
            check = decode_b64url(meta["check"])
        except (ValueError, KeyError, TypeError) as exc:
            raise KeystoreCorrupt(f"{meta_path} does not parse: {exc}") from None
        try:
            if AESGCM(kek).decrypt(check[:12], check[12:], _CHECK_AAD) != _CHECK_PLAINTEXT:
                raise InvalidTag
        except InvalidTag:
            raise KeystoreLocked(
                f"the master key from {source} does not open the key store at {settings.store_dir} "
                "(wrong key, or the store was initialised with another one)"
            ) from None
        return cls(settings.store_dir, kek)

    @classmethod
    def initialise(cls, settings: KeySettings, *, owner: str = HUB_OWNER) -> InitResult:
        """Create the store (and the master key file if it does not exist yet) and the owner's three keys.

        Idempotent: an existing store is opened with the configured master key, and only missing
        keys are generated.
        """
        written: Path | None = None
        try:
            master, source = _read_master(settings)
        except KeystoreLocked:
            target = settings.master_key_file or default_master_key_file(settings)
            configured = settings.master_key is not None and settings.master_key.get_secret_value().strip()
            if configured or target.exists():
                raise
            if (settings.store_dir / "keystore.json").exists():
                raise KeystoreLocked(
                    f"the key store at {settings.store_dir} exists but no master key is configured; "
                    "refusing to create a new master key that could not open it"
                ) from None
            written = target
            master, source = generate_master_key(), str(written)
            _mkdir_private(written.parent)
            _write_private_file(written, (master + "\n").encode("ascii"))
        meta_path = settings.store_dir / "keystore.json"
        created = not meta_path.exists()
        if created:
            _mkdir_private(settings.store_dir)
            kdf = _new_kdf(master, source)
            kek = _derive_kek(master, kdf, source)
            nonce = secrets.token_bytes(12)
            check = nonce + AESGCM(kek).encrypt(nonce, _CHECK_PLAINTEXT, _CHECK_AAD)
            document = {
                "format": STORE_FORMAT,
                "created": _now().isoformat(),
                "kdf": kdf,
                "check": encode_b64url(check),
            }
            _write_private_file(meta_path, json.dumps(document, indent=2).encode("utf-8"))
        store = cls.open(settings)
        keys = [store.ensure(owner, kind) for kind in KeyKind]
        return InitResult(settings.store_dir, created, written, keys)

    # ---------------------------------------------------------------------------------- management

    def list_keys(self, owner: str | None = None) -> list[KeyInfo]:
        infos = [self._info(doc) for doc in self._documents(owner)]
        return sorted(
            infos,
            key=lambda i: (
                i.owner,
                i.kind.value,
                i.status != KeyStatus.ACTIVE,
                -i.created.timestamp(),
                i.key_id,
            ),
        )

    def active(self, owner: str, kind: KeyKind | str) -> KeyInfo | None:
        kind = _kind(kind)
        return next(
            (i for i in self.list_keys(owner) if i.kind == kind and i.status == KeyStatus.ACTIVE), None
        )

    def generate(self, owner: str, kind: KeyKind | str) -> KeyInfo:
        """Create the owner's first active key of a kind; KeystoreConflict if one is active already."""
        owner, kind = _check_owner(owner), _kind(kind)
        with self._lock():
            current = self.active(owner, kind)
            if current is not None:
                raise KeystoreConflict(
                    f"{owner} already has an active {kind} key {current.key_id}; use `hub keys rotate`"
                )
            return self._create(owner, kind, "generated")

    def ensure(self, owner: str, kind: KeyKind | str) -> KeyInfo:
        owner, kind = _check_owner(owner), _kind(kind)
        with self._lock():
            return self.active(owner, kind) or self._create(owner, kind, "generated")

    def rotate(self, owner: str, kind: KeyKind | str) -> tuple[KeyInfo, KeyInfo]:
        """New active key; the previous one is retired but kept to open, verify and link old data.

        Returns (new, retired). Processes that cached the old key ring pick up the new key on their
        next miss (openers) or on ``reload()``; until then they sign and seal with the retired key,
        which every verifier and opener still accepts.
        """
        owner, kind = _check_owner(owner), _kind(kind)
        with self._lock():
            current = self.active(owner, kind)
            if current is None:
                raise CryptoUnknownKey(f"{owner} has no active {kind} key to rotate; use `hub keys generate`")
            new = self._create(owner, kind, "rotated", previous=current.key_id)
            path = self._path(owner, kind, current.key_id)
            document = self._load(path)
            document["status"] = KeyStatus.RETIRED.value
            document["retired"] = _now().isoformat()
            _write_private_file(path, json.dumps(document, indent=2).encode("utf-8"))
            self._private.pop((owner, kind), None)
            return new, self._info(document)

    def reload(self) -> None:
        """Forget decrypted keys; the next use reads the disk again (after a rotation elsewhere)."""
        self._private.clear()

    def export_public(self, owner: str | None = None) -> dict[str, Any]:
        keys = [
            {
                "owner": i.owner,
                "kind": i.kind.value,
                "key_id": i.key_id,
                "status": i.status.value,
                "created": i.created.isoformat(),
                "public": encode_b64url(i.public),
            }
            for i in self.list_keys(owner)
            if i.public is not None
        ]
        return {"format": EXPORT_FORMAT, "exported": _now().isoformat(), "keys": keys}

    def public_registry(self) -> PublicKeyRegistry:
        """All public keys in this store (the demo's stand-in for the directory's registered keys)."""
        return PublicKeyRegistry(
            PublicKey(i.owner, i.kind, i.key_id, i.public, i.status, i.created)
            for i in self.list_keys()
            if i.public is not None
        )

    # ---------------------------------------------------------------------------------- use

    def opener(self, owner: str) -> X25519Opener:
        def load() -> dict[str, X25519PrivateKey]:
            self._private.pop((owner, KeyKind.X25519), None)
            return self._x25519(owner)

        return X25519Opener(owner, self._x25519(owner), refresh=load)

    def signer(self, owner: str = HUB_OWNER) -> Ed25519Signer:
        secrets_by_id = self._secrets(owner, KeyKind.ED25519)
        if not secrets_by_id:
            raise CryptoUnknownKey(f"{owner} has no ed25519 signing key: run `hub keys generate`")
        return Ed25519Signer(owner, Ed25519PrivateKey.from_private_bytes(next(iter(secrets_by_id.values()))))

    def pseudonymiser(self, owner: str = HUB_OWNER) -> HmacPseudonymiser:
        return HmacPseudonymiser(list(self._secrets(owner, KeyKind.HMAC).items()))

    def _x25519(self, owner: str) -> dict[str, X25519PrivateKey]:
        return {
            kid: X25519PrivateKey.from_private_bytes(raw)
            for kid, raw in self._secrets(owner, KeyKind.X25519).items()
        }

    def _secrets(self, owner: str, kind: KeyKind) -> dict[str, bytes]:
        """Decrypted private keys of an owner and kind, active first, cached."""
        owner = _check_owner(owner)
        cached = self._private.get((owner, kind))
        if cached is None:
            cached = {}
            for info in self.list_keys(owner):
                if info.kind == kind:
                    cached[info.key_id] = self._decrypt(info)
            self._private[(owner, kind)] = cached
        return cached

    # ---------------------------------------------------------------------------------- files

    def _path(self, owner: str, kind: KeyKind, key_id: str) -> Path:
        return self._dir / owner / kind.value / f"{key_id}.json"

    def _documents(self, owner: str | None) -> Iterator[dict[str, Any]]:
        pattern = f"{_check_owner(owner)}/*/*.json" if owner else "*/*/*.json"
        for path in sorted(self._dir.glob(pattern)):
            yield self._load(path)

    def _load(self, path: Path) -> dict[str, Any]:
        try:
            document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if document.get("format") != KEY_FORMAT:
                raise ValueError(f"format {document.get('format')!r}")
            expected = (path.parent.parent.name, path.parent.name, path.stem)
            if (document["owner"], document["kind"], document["key_id"]) != expected:
                raise ValueError("owner, kind or key id differs from the file's place in the store")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeystoreCorrupt(f"key file {path} is unreadable: {exc}") from None
        return document

    def _info(self, document: dict[str, Any]) -> KeyInfo:
        try:
            return KeyInfo(
                owner=document["owner"],
                kind=KeyKind(document["kind"]),
                key_id=document["key_id"],
                status=KeyStatus(document["status"]),
                created=datetime.fromisoformat(document["created"]),
                retired=datetime.fromisoformat(document["retired"]) if document.get("retired") else None,
                public=decode_b64url(document["public"]) if document.get("public") else None,
            )
        except (KeyError, ValueError) as exc:
            raise KeystoreCorrupt(f"key {document.get('key_id')!r} has bad metadata: {exc}") from None

    def _decrypt(self, info: KeyInfo) -> bytes:
        document = self._load(self._path(info.owner, info.kind, info.key_id))
        try:
            sealed = decode_b64url(document["private"])
            raw = self._aead.decrypt(sealed[:12], sealed[12:], _key_aad(info.owner, info.kind, info.key_id))
        except (InvalidTag, KeyError, ValueError):
            raise KeystoreCorrupt(
                f"private {info.kind} key {info.key_id} of {info.owner} fails authentication "
                "(file altered or moved between owners)"
            ) from None
        if info.kind == KeyKind.HMAC:
            derived = key_id_for_secret(raw)
        elif info.kind == KeyKind.X25519:
            derived = key_id_for_public(
                X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()
            )
        else:
            derived = key_id_for_public(
                Ed25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()
            )
        if derived != info.key_id:
            raise KeystoreCorrupt(f"private key {info.key_id} of {info.owner} does not match its key id")
        return raw

    def _create(self, owner: str, kind: KeyKind, action: str, previous: str | None = None) -> KeyInfo:
        public: bytes | None
        if kind == KeyKind.X25519:
            x = X25519PrivateKey.generate()
            raw, public = x.private_bytes_raw(), x.public_key().public_bytes_raw()
        elif kind == KeyKind.ED25519:
            e = Ed25519PrivateKey.generate()
            raw, public = e.private_bytes_raw(), e.public_key().public_bytes_raw()
        else:
            raw, public = secrets.token_bytes(32), None
        key_id = key_id_for_public(public) if public is not None else key_id_for_secret(raw)
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, raw, _key_aad(owner, kind, key_id))
        created = _now()
        document = {
            "format": KEY_FORMAT,
            "owner": owner,
            "kind": kind.value,
            "key_id": key_id,
            "status": KeyStatus.ACTIVE.value,
            "created": created.isoformat(),
            "retired": None,
            "public": encode_b64url(public) if public is not None else None,
            "private": encode_b64url(sealed),
        }
        _mkdir_private(self._dir / owner)
        _mkdir_private(self._dir / owner / kind.value)
        _write_private_file(self._path(owner, kind, key_id), json.dumps(document, indent=2).encode("utf-8"))
        self._journal(
            {
                "at": created.isoformat(),
                "action": action,
                "owner": owner,
                "kind": kind.value,
                "key_id": key_id,
                "previous": previous,
            }
        )
        self._private.pop((owner, kind), None)
        return self._info(document)

    def _journal(self, entry: dict[str, Any]) -> None:
        path = self._dir / "journal.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise key changes between processes (two operators rotating at once)."""
        fd = os.open(self._dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
