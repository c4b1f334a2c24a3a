"""Sealed deliveries (HPKE-wrapped per-delivery AES-256-GCM keys), Ed25519 signatures, HMAC pseudonyms.

Wire format v1 of the two halves of a sealed delivery (all integers big-endian)::

    header   = "QX" | version 0x01 | part | len8 referral_id | len8 delivery_id | len8 recipient_org
               | recipient key id (8 raw bytes, the 16 hex chars of the id)
    ciphertext  = header(part 0x01) | dek_commit(16) | nonce(12) | len32 | AES-256-GCM(DEK, payload)
                  with associated data = header | dek_commit
    wrapped_key = header(part 0x02) | suite16 (0x0001) | len16 | HPKE base-mode single-shot
                  (DHKEM X25519, HKDF-SHA256, AES-256-GCM) of the DEK to the recipient key,
                  with info = header | suite16

``dek_commit`` = HMAC-SHA256(DEK, label)[:16]. AES-GCM is not key-committing, so without it a wrapped
key carrying a different DEK could be paired with a ciphertext; with it the pair must match, and a
delivery signature over the ciphertext half covers the whole delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub.services.crypto_port import (
    PSEUDONYM_PREFIX,
    SIGNATURE_PREFIX,
    CryptoContextMismatch,
    CryptoMalformed,
    CryptoTampered,
    CryptoUnknownKey,
    CryptoWrongKey,
    KeyKind,
    KeyStatus,
    KeystoreInvalid,
    PseudonymMalformed,
    PublicKey,
    PublicKeyLookup,
    SealedDelivery,
    SignatureInvalid,
    SignatureMalformed,
    SignatureMissing,
    SignaturePurpose,
    SignatureUnknownKey,
    decode_b64url,
    encode_b64url,
    normalise_student_id,
)

_MAGIC = b"QX"
_VERSION = 1
_PART_CIPHERTEXT = 0x01
_PART_WRAPPED_KEY = 0x02
_SUITE_X25519_SHA256_AES256 = 0x0001
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_DEK_COMMIT_LABEL = b"qixin/dek-commit/v1"
_COMMIT_LEN = 16
_NONCE_LEN = 12
_KEY_ID_HEX = re.compile(r"[0-9a-f]{16}")
_SIGNATURE_LABEL = b"qixin-sig/v1\x00"
_PSEUDONYM_LABEL = b"qixin/pseudonym/v1\x00"
_PSEUDONYM_BYTES = 20  # 160 bits -> exactly 32 base32 characters, no padding
_HMAC_KEY_ID_LABEL = b"qixin/hmac-key-id/v1\x00"
_REFRESH_EVERY_S = 5.0
_DIRECTORY_USE = {("seal", "x25519"): KeyKind.X25519, ("sign", "ed25519"): KeyKind.ED25519}


def key_id_for_public(public: bytes) -> str:
    """Key id of an X25519 or Ed25519 key: the first 16 hex characters of SHA-256 of the raw key."""
    return hashlib.sha256(public).hexdigest()[:16]


def key_id_for_secret(secret: bytes) -> str:
    """Key id of an HMAC key: a labelled hash, so the id reveals nothing usable about the key."""
    return hashlib.sha256(_HMAC_KEY_ID_LABEL + secret).hexdigest()[:16]


def signed_message(purpose: SignaturePurpose, data: bytes) -> bytes:
    """What Ed25519 actually signs: ``b"qixin-sig/v1\\0" + purpose + b"\\0" + data``.

    For submissions ``data`` is the exact HTTP request body (or Kafka record value) as sent; the hub
    verifies those bytes before parsing them, so no JSON canonicalisation is needed on the wire.
    """
    return b"".join((_SIGNATURE_LABEL, purpose.value.encode("ascii"), b"\x00", data))


# --------------------------------------------------------------------------------------------------
# Envelope encoding


@dataclass(frozen=True, slots=True)
class _Header:
    part: int
    referral_id: str
    delivery_id: str
    recipient_org: str
    key_id: str
    raw: bytes


def _encode_header(part: int, referral_id: str, delivery_id: str, recipient_org: str, key_id: str) -> bytes:
    out = bytearray(_MAGIC)
    out += bytes((_VERSION, part))
    for name, value in (
        ("referral id", referral_id),
        ("delivery id", delivery_id),
        ("recipient org", recipient_org),
    ):
        encoded = value.encode("utf-8")
        if not 0 < len(encoded) <= 255:
            raise CryptoMalformed(f"the {name} must be 1 to 255 bytes of UTF-8 to be sealed")
        out.append(len(encoded))
        out += encoded
    if not _KEY_ID_HEX.fullmatch(key_id):
        raise CryptoMalformed(f"key id {key_id!r} is not 16 lowercase hex characters")
    out += bytes.fromhex(key_id)
    return bytes(out)


class _Reader:
    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CryptoMalformed(f"the {what} must be bytes")
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CryptoMalformed(f"the {self.what} is truncated ({len(self.data)} bytes)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def text(self) -> str:
        raw = self.take(self.uint(1))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CryptoMalformed(f"the {self.what} header holds a field that is not UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise CryptoMalformed(f"the {self.what} has {len(self.data) - self.pos} trailing bytes")


def _read_header(reader: _Reader, part: int) -> _Header:
    magic = reader.take(2)
    version, got_part = reader.take(2)
    if magic != _MAGIC:
        raise CryptoMalformed(f"the {reader.what} is not a Qixin sealed envelope")
    if version != _VERSION:
        raise CryptoMalformed(f"the {reader.what} has unsupported format version {version}")
    if got_part != part:
        raise CryptoMalformed(f"expected a {reader.what} but got another part of a sealed delivery")
    referral_id = reader.text()
    delivery_id = reader.text()
    recipient_org = reader.text()
    key_id = reader.take(8).hex()
    return _Header(part, referral_id, delivery_id, recipient_org, key_id, reader.data[: reader.pos])


@dataclass(frozen=True, slots=True)
class _Ciphertext:
    header: _Header
    commit: bytes
    aad: bytes
    nonce: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class _WrappedKey:
    header: _Header
    info: bytes
    enc: bytes


def _parse_ciphertext(data: bytes) -> _Ciphertext:
    reader = _Reader(data, "ciphertext")
    header = _read_header(reader, _PART_CIPHERTEXT)
    commit = reader.take(_COMMIT_LEN)
    aad = reader.data[: reader.pos]
    nonce = reader.take(_NONCE_LEN)
    body = reader.take(reader.uint(4))
    if len(body) < 16:
        raise CryptoMalformed("the ciphertext body is shorter than its authentication tag")
    reader.end()
    return _Ciphertext(header, commit, aad, nonce, body)


def _parse_wrapped_key(data: bytes) -> _WrappedKey:
    reader = _Reader(data, "wrapped key")
    header = _read_header(reader, _PART_WRAPPED_KEY)
    suite = reader.uint(2)
    if suite != _SUITE_X25519_SHA256_AES256:
        raise CryptoMalformed(f"the wrapped key uses unknown suite {suite:#06x}")
    info = reader.data[: reader.pos]
    enc = reader.take(reader.uint(2))
    reader.end()
    return _WrappedKey(header, info, enc)


# --------------------------------------------------------------------------------------------------
# Public keys


class PublicKeyRegistry:
    """In-memory PublicKeyLookup: from the directory's keys, a mapping, or an export document."""

    def __init__(self, keys: Iterable[PublicKey] = ()) -> None:
        self._by_owner: dict[tuple[str, KeyKind], list[PublicKey]] = {}
        self._owner_of: dict[str, str] = {}
        for key in keys:
            self.add(key)

    def add(self, key: PublicKey) -> None:
        if key.kind not in (KeyKind.X25519, KeyKind.ED25519):
            raise KeystoreInvalid(f"only x25519 and ed25519 keys are public, not {key.kind}")
        if len(key.public) != 32:
            raise KeystoreInvalid(f"{key.kind} public key {key.key_id} of {key.owner} is not 32 bytes")
        if key_id_for_public(key.public) != key.key_id:
            raise KeystoreInvalid(
                f"key id {key.key_id} of {key.owner} does not match its public key "
                f"(expected {key_id_for_public(key.public)})"
            )
        entries = self._by_owner.setdefault((key.owner, key.kind), [])
        if any(k.key_id == key.key_id for k in entries):
            return
        entries.append(key)
        # Active first, then newest first, so keys()[0] is what sealing uses.
        entries.sort(
            key=lambda k: (k.status != KeyStatus.ACTIVE, -(k.created.timestamp() if k.created else 0))
        )
        self._owner_of[key.key_id] = key.owner

    @classmethod
    def from_pairs(
        cls, kind: KeyKind, mapping: Mapping[str, Sequence[tuple[str, bytes | str]]]
    ) -> PublicKeyRegistry:
        """From ``{org id: [(key id, raw or base64 public key), ...]}``, the first pair being active."""
        registry = cls()
        for owner, pairs in mapping.items():
            for index, (key_id, public) in enumerate(pairs):
                raw = public if isinstance(public, bytes) else _decode_public(public)
                status = KeyStatus.ACTIVE if index == 0 else KeyStatus.RETIRED
                registry.add(PublicKey(owner, kind, key_id, raw, status))
        return registry

    @classmethod
    def from_export(cls, document: Mapping[str, object]) -> PublicKeyRegistry:
        """From the JSON written by ``hub keys export-public``."""
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise KeystoreInvalid("a public key export has a 'keys' list")
        registry = cls()
        for entry in keys:
            try:
                registry.add(
                    PublicKey(
                        owner=str(entry["owner"]),
                        kind=KeyKind(entry["kind"]),
                        key_id=str(entry["key_id"]),
                        public=_decode_public(entry["public"]),
                        status=KeyStatus(entry.get("status", "active")),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise KeystoreInvalid(f"bad entry in public key export: {exc}") from None
        return registry

    @classmethod
    def from_directory(cls, organisations: Iterable[Any]) -> PublicKeyRegistry:
        """From directory organisations (``.id``, ``.public_keys`` of ``kid``/``use``/``alg``/``key``).

        ``use: seal`` is an X25519 key, ``use: sign`` an Ed25519 key; the first listed key of each use
        is the active one, later ones are retired keys kept so old signatures still verify.
        """
        registry = cls()
        for org in organisations:
            seen: set[KeyKind] = set()
            for entry in org.public_keys:
                kind = _DIRECTORY_USE.get((entry.use, entry.alg.lower()))
                if kind is None:
                    raise KeystoreInvalid(
                        f"key {entry.kid} of {org.id}: use {entry.use!r} with alg {entry.alg!r} is not "
                        "supported (seal: X25519, sign: Ed25519)"
                    )
                status = KeyStatus.RETIRED if kind in seen else KeyStatus.ACTIVE
                seen.add(kind)
                registry.add(PublicKey(org.id, kind, entry.kid, _decode_public(entry.key), status))
        return registry

    def keys(self, owner: str, kind: KeyKind) -> Sequence[PublicKey]:
        return tuple(self._by_owner.get((owner, kind), ()))

    def active(self, owner: str, kind: KeyKind) -> PublicKey:
        for key in self._by_owner.get((owner, kind), ()):
            if key.status == KeyStatus.ACTIVE:
                return key
        raise CryptoUnknownKey(f"organisation {owner} has no active {kind} public key registered")

    def owner_of(self, key_id: str) -> str | None:
        return self._owner_of.get(key_id)


def _decode_public(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return decode_b64url(text)


# --------------------------------------------------------------------------------------------------
# Sealing


def seal_for(
    plaintext: bytes,
    recipient: PublicKey,
    *,
    referral_id: str,
    delivery_id: str,
    recipient_public: X25519PublicKey | None = None,
) -> SealedDelivery:
    """Seal ``plaintext`` for one recipient key: a fresh DEK encrypts it, HPKE wraps the DEK."""
    if recipient.kind != KeyKind.X25519:
        raise CryptoWrongKey(f"key {recipient.key_id} of {recipient.owner} is {recipient.kind}, not x25519")
    public = recipient_public or X25519PublicKey.from_public_bytes(recipient.public)
    dek = os.urandom(32)
    commit = hmac.digest(dek, _DEK_COMMIT_LABEL, "sha256")[:_COMMIT_LEN]
    ct_header = _encode_header(_PART_CIPHERTEXT, referral_id, delivery_id, recipient.owner, recipient.key_id)
    aad = ct_header + commit
    nonce = os.urandom(_NONCE_LEN)
    body = AESGCM(dek).encrypt(nonce, plaintext, aad)
    ciphertext = b"".join((aad, nonce, len(body).to_bytes(4, "big"), body))
    info = _encode_header(_PART_WRAPPED_KEY, referral_id, delivery_id, recipient.owner, recipient.key_id)
    info += _SUITE_X25519_SHA256_AES256.to_bytes(2, "big")
    enc = _SUITE.encrypt(dek, public, info=info)
    wrapped_key = b"".join((info, len(enc).to_bytes(2, "big"), enc))
    return SealedDelivery(
        ciphertext, wrapped_key, referral_id, delivery_id, recipient.owner, recipient.key_id
    )


class X25519Sealer:
    """Sealer over a PublicKeyLookup; public key objects are cached by key id."""

    def __init__(self, lookup: PublicKeyLookup) -> None:
        self._lookup = lookup
        self._objects: dict[tuple[str, bytes], X25519PublicKey] = {}

    def seal(
        self, plaintext: bytes, *, referral_id: str, recipient_org: str, delivery_id: str
    ) -> SealedDelivery:
        recipient = self._lookup.active(recipient_org, KeyKind.X25519)
        cache_key = (recipient.key_id, recipient.public)
        public = self._objects.get(cache_key)
        if public is None:
            public = self._objects[cache_key] = X25519PublicKey.from_public_bytes(recipient.public)
        return seal_for(
            plaintext, recipient, referral_id=referral_id, delivery_id=delivery_id, recipient_public=public
        )


class X25519Opener:
    """Opens deliveries sealed for one owner, with its active and retired X25519 keys pre-loaded.

    ``refresh`` (the key store's reload) is tried, at most every few seconds, when an envelope names
    a key this ring does not hold, so a process started before a rotation still opens deliveries
    sealed after it.
    """

    def __init__(
        self,
        owner: str,
        keys: Mapping[str, X25519PrivateKey],
        refresh: Callable[[], Mapping[str, X25519PrivateKey]] | None = None,
    ) -> None:
        self._owner = owner
        self._keys = dict(keys)
        self._refresh = refresh
        self._refreshed_at = float("-inf")

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def open_sealed(
        self,
        ciphertext: bytes,
        wrapped_key: bytes,
        *,
        referral_id: str,
        delivery_id: str | None = None,
        recipient_org: str | None = None,
    ) -> bytes:
        ct = _parse_ciphertext(ciphertext)
        wk = _parse_wrapped_key(wrapped_key)
        h, k = ct.header, wk.header
        for field, a, b in (
            ("referral", h.referral_id, k.referral_id),
            ("delivery", h.delivery_id, k.delivery_id),
            ("recipient", h.recipient_org, k.recipient_org),
            ("recipient key", h.key_id, k.key_id),
        ):
            if a != b:
                raise CryptoContextMismatch(
                    f"the wrapped key belongs to {field} {b!r} but the ciphertext to {field} {a!r}"
                )
        # Without an explicit recipient the ring's owner is implied; a difference is then a wrong key.
        for field, want, got in (
            ("referral", referral_id, h.referral_id),
            ("delivery", delivery_id, h.delivery_id),
            ("recipient", recipient_org, h.recipient_org),
        ):
            if want is not None and want != got:
                raise CryptoContextMismatch(f"the envelope is bound to {field} {got!r}, not {want!r}")
        if h.recipient_org != self._owner:
            raise CryptoWrongKey(
                f"delivery {h.delivery_id} is sealed for {h.recipient_org} (key {h.key_id}); "
                f"this key ring holds the keys of {self._owner}"
            )
        private = self._private(h.key_id)
        try:
            dek = _SUITE.decrypt(wk.enc, private, info=wk.info)
        except InvalidTag:
            raise CryptoTampered(
                f"the wrapped key of delivery {h.delivery_id} failed authentication"
            ) from None
        if len(dek) != 32 or not hmac.compare_digest(
            hmac.digest(dek, _DEK_COMMIT_LABEL, "sha256")[:_COMMIT_LEN], ct.commit
        ):
            raise CryptoTampered(f"the wrapped key does not commit to the ciphertext of {h.delivery_id}")
        try:
            return AESGCM(dek).decrypt(ct.nonce, ct.body, ct.aad)
        except InvalidTag:
            raise CryptoTampered(
                f"the ciphertext of delivery {h.delivery_id} failed authentication"
            ) from None

    def _private(self, key_id: str) -> X25519PrivateKey:
        private = self._keys.get(key_id)
        now = time.monotonic()
        # Rate-limited, so envelopes naming made-up key ids cannot make every open re-read the disk.
        if private is None and self._refresh is not None and now - self._refreshed_at >= _REFRESH_EVERY_S:
            self._refreshed_at = now
            self._keys = dict(self._refresh())
            private = self._keys.get(key_id)
        if private is None:
            raise CryptoUnknownKey(
                f"key {key_id} of {self._owner} is not in the key ring (destroyed, or never existed)"
            )
        return private


# --------------------------------------------------------------------------------------------------
# Signatures


class Ed25519Signer:
    def __init__(self, owner: str, private: Ed25519PrivateKey) -> None:
        self._owner = owner
        self._private = private
        self._key_id = key_id_for_public(private.public_key().public_bytes_raw())

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, data: bytes, *, purpose: SignaturePurpose) -> str:
        signature = self._private.sign(signed_message(purpose, data))
        return f"{SIGNATURE_PREFIX}:{self._key_id}:{encode_b64url(signature)}"


def parse_signature(token: str) -> tuple[str, bytes]:
    parts = token.strip().split(":")
    if len(parts) != 3 or parts[0] != SIGNATURE_PREFIX:
        raise SignatureMalformed("a signature reads 'ed25519:<key id>:<base64url signature>'")
    if not _KEY_ID_HEX.fullmatch(parts[1]):
        raise SignatureMalformed("the signature's key id is not 16 lowercase hex characters")
    try:
        raw = decode_b64url(parts[2])
    except CryptoMalformed:
        raise SignatureMalformed("the signature value is not base64url") from None
    if len(raw) != 64:
        raise SignatureMalformed(f"an Ed25519 signature is 64 bytes, not {len(raw)}")
    return parts[1], raw


class Ed25519Verifier:
    """Verifies against every key (active or retired) the lookup registers for the claimed signer."""

    def __init__(self, lookup: PublicKeyLookup) -> None:
        self._lookup = lookup
        self._objects: dict[tuple[str, bytes], Ed25519PublicKey] = {}

    def verify(self, data: bytes, signature: str | None, *, signer: str, purpose: SignaturePurpose) -> str:
        if not signature or not signature.strip():
            raise SignatureMissing(f"the {purpose} from {signer} carries no signature")
        key_id, raw = parse_signature(signature)
        key = next((k for k in self._lookup.keys(signer, KeyKind.ED25519) if k.key_id == key_id), None)
        if key is None:
            other = self._lookup.owner_of(key_id)
            whose = f"it is registered to {other}" if other else "no organisation registered it"
            raise SignatureUnknownKey(
                f"the {purpose} from {signer} is signed with key {key_id}, "
                f"which is not one of {signer}'s keys ({whose})"
            )
        cache_key = (key.key_id, key.public)
        public = self._objects.get(cache_key)
        if public is None:
            public = self._objects[cache_key] = Ed25519PublicKey.from_public_bytes(key.public)
        try:
            public.verify(raw, signed_message(purpose, data))
        except InvalidSignature:
            raise SignatureInvalid(
                f"the {purpose} from {signer} does not match its signature by key {key_id} "
                "(altered after signing, or signed for another purpose)"
            ) from None
        return key_id


# --------------------------------------------------------------------------------------------------
# Pseudonyms


class HmacPseudonymiser:
    """``psn:<key id>:<base32 of HMAC-SHA256(key, label | normalised id), 160 bits>``.

    Rotation keeps links because the hub never forgets a retired pseudonym key: whenever a raw id is
    seen again (every submission carries it to the edge), ``pseudonyms()`` yields its pseudonym under
    every known key, and the read model links any record stored under any of them, recording the
    current one. HMAC cannot be inverted, so a pseudonym alone cannot be re-keyed without its raw id.
    """

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise CryptoUnknownKey("no pseudonym (hmac) key: run `hub keys init` or `hub keys generate`")
        self._keys = tuple(keys)
        self._by_id = dict(keys)

    @property
    def key_id(self) -> str:
        return self._keys[0][0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self._keys)

    @staticmethod
    def _digest(secret: bytes, normalised: bytes) -> str:
        mac = hmac.digest(secret, _PSEUDONYM_LABEL + normalised, "sha256")[:_PSEUDONYM_BYTES]
        return base64.b32encode(mac).decode("ascii").lower()

    def pseudonym(self, raw_id: str, *, issuer: str | None = None) -> str:
        key_id, secret = self._keys[0]
        normalised = normalise_student_id(raw_id, issuer=issuer).encode("utf-8")
        return f"{PSEUDONYM_PREFIX}:{key_id}:{self._digest(secret, normalised)}"

    def pseudonyms(self, raw_id: str, *, issuer: str | None = None) -> tuple[str, ...]:
        normalised = normalise_student_id(raw_id, issuer=issuer).encode("utf-8")
        return tuple(
            f"{PSEUDONYM_PREFIX}:{kid}:{self._digest(secret, normalised)}" for kid, secret in self._keys
        )

    def matches(self, raw_id: str, pseudonym: str, *, issuer: str | None = None) -> bool:
        key_id, digest = parse_pseudonym(pseudonym)
        secret = self._by_id.get(key_id)
        if secret is None:
            raise CryptoUnknownKey(f"pseudonym key {key_id} is not known to this hub (another hub's key?)")
        normalised = normalise_student_id(raw_id, issuer=issuer).encode("utf-8")
        return hmac.compare_digest(self._digest(secret, normalised), digest)


_PSEUDONYM = re.compile(rf"{PSEUDONYM_PREFIX}:([0-9a-f]{{16}}):([a-z2-7]{{32}})")


def parse_pseudonym(pseudonym: str) -> tuple[str, str]:
    """(key id, digest) of a pseudonym; raises PseudonymMalformed."""
    match = _PSEUDONYM.fullmatch(pseudonym) if isinstance(pseudonym, str) else None
    if match is None:
        raise PseudonymMalformed("a pseudonym reads 'psn:<16 hex key id>:<32 base32 characters>'")
    return match.group(1), match.group(2)
