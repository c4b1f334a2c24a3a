"""Key material for a connector: its Ed25519 signing key, the pseudonym (HMAC) key, the hub's public keys.

Production: files the agency holds (``signing_key_file``, ``pseudonym_key_file``,
``hub_public_keys_file``). Demo custody and tests: the hub's own key store, where every organisation's
keys live (``hub_var_dir`` or ``keystore_dir`` + ``master_key_file``).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connectors.common.settings import ConnectorSettings
from hub.adapters.crypto import Ed25519Signer, HmacPseudonymiser, PublicKeyRegistry, key_id_for_secret
from hub.adapters.keystore import KeyStore
from hub.services.crypto_port import CryptoMalformed, KeyKind, decode_b64url, encode_b64url
from hub.settings import KeySettings


class KeyConfigError(RuntimeError):
    """No usable key is configured; the message says which setting to give."""


def _read_secret(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    stripped = data.strip()
    if stripped and all(32 < b < 127 for b in stripped):
        try:
            return decode_b64url(stripped.decode("ascii"))
        except CryptoMalformed:
            pass
    return data


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8) file, 32 raw bytes, or their base64url text."""
    data = path.read_bytes() if path.exists() else b""
    if b"-----BEGIN" in data:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
        return key
    raw = _read_secret(path, "signing key")
    if len(raw) != 32:
        raise KeyConfigError(f"{path}: an Ed25519 private key is 32 bytes (or PEM), not {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def write_signing_key(path: Path) -> tuple[str, str]:
    """Create a new Ed25519 key as PEM (0600); return (key id, base64url public key) for the directory."""
    from hub.adapters.crypto import key_id_for_public

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=False)
    path.write_bytes(pem)
    public = key.public_key().public_bytes_raw()
    return key_id_for_public(public), encode_b64url(public)


class ConnectorKeys:
    """Loads lazily, so a dry run that needs only pseudonyms never opens the signing key."""

    def __init__(self, settings: ConnectorSettings) -> None:
        self._s = settings

    @cached_property
    def store(self) -> KeyStore:
        if self._s.keystore_dir is None:
            raise KeyConfigError(
                "no key files configured and no key store: set QIXIN_CONNECTOR_SIGNING_KEY_FILE, "
                "QIXIN_CONNECTOR_PSEUDONYM_KEY_FILE and QIXIN_CONNECTOR_HUB_PUBLIC_KEYS_FILE, or "
                "QIXIN_CONNECTOR_HUB_VAR_DIR for demo custody"
            )
        return KeyStore.open(
            KeySettings(store_dir=self._s.keystore_dir, master_key_file=self._s.master_key_file)
        )

    @cached_property
    def signer(self) -> Ed25519Signer:
        if self._s.signing_key_file is not None:
            return Ed25519Signer(self._s.agency, load_signing_key(self._s.signing_key_file))
        self.store.ensure(self._s.agency, KeyKind.ED25519)  # demo custody: created on first use
        return self.store.signer(self._s.agency)

    @cached_property
    def pseudonymiser(self) -> HmacPseudonymiser:
        if self._s.pseudonym_key_file is not None:
            secret = _read_secret(self._s.pseudonym_key_file, "pseudonym key")
            if len(secret) < 32:
                raise KeyConfigError(f"{self._s.pseudonym_key_file}: the HMAC key must be at least 32 bytes")
            return HmacPseudonymiser([(key_id_for_secret(secret), secret)])
        return self.store.pseudonymiser()

    @cached_property
    def hub_registry(self) -> PublicKeyRegistry:
        if self._s.hub_public_keys_file is not None:
            document = json.loads(self._s.hub_public_keys_file.read_text(encoding="utf-8"))
            return PublicKeyRegistry.from_export(document)
        return self.store.public_registry()
