"""Cryptography ports: the Protocols for sealing, signing and pseudonyms, their value types and errors."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from hub.domain.error import HubError

# --------------------------------------------------------------------------------------------------
# Vocabulary


class KeyKind(StrEnum):
    X25519 = "x25519"  # sealing deliveries for a recipient
    ED25519 = "ed25519"  # signing submissions, deliveries, audit checkpoints
    HMAC = "hmac"  # student pseudonyms (secret; never exported)


class KeyStatus(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"  # no longer used to seal/sign/pseudonymise; still opens, verifies, links


class SignaturePurpose(StrEnum):
    """Domain separation: a signature made for one purpose never verifies for another."""

    SUBMISSION = "submission"
    DELIVERY = "delivery"
    AUDIT_CHECKPOINT = "audit-checkpoint"


HUB_OWNER = "hub"
PSEUDONYM_PREFIX = "psn"
SIGNATURE_PREFIX = "ed25519"

# --------------------------------------------------------------------------------------------------
# Errors: stable codes; messages name ids and key ids, never key material or plaintext.


class CryptoError(HubError):
    def __init__(
        self, message: str, code: str, status: int = 422, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message=message, code=code, status=status, details=details or [])


class CryptoMalformed(CryptoError):
    """Truncated, over-long, unknown version or otherwise unparseable envelope bytes."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "crypto-malformed")


class CryptoTampered(CryptoError):
    """Authentication failed: ciphertext, nonce, wrapped key or bound header bytes were altered."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "crypto-tampered")


class CryptoContextMismatch(CryptoError):
    """The envelope is intact but bound to another referral, delivery or recipient than expected."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "crypto-context-mismatch")


class CryptoWrongKey(CryptoError):
    """The envelope is addressed to a different recipient than the key ring opening it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "crypto-wrong-key")


class CryptoUnknownKey(CryptoError):
    """A key id that the key ring, registry or pseudonymiser does not hold (or no active key)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "crypto-unknown-key")


class SignatureMissing(CryptoError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "signature-missing", status=401)


class SignatureMalformed(CryptoError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "signature-malformed", status=401)


class SignatureUnknownKey(CryptoError):
    """The signature names a key that is not registered for the claimed signer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "signature-unknown-key", status=401)


class SignatureInvalid(CryptoError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "signature-invalid", status=401)


class KeystoreLocked(CryptoError):
    """No master key configured, or the configured one does not open this key store."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "keystore-locked", status=503)


class KeystoreCorrupt(CryptoError):
    """The master key is right but a key file fails authentication or does not parse."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "keystore-corrupt", status=500)


class KeystoreConflict(CryptoError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "keystore-conflict", status=409)


class KeystoreInvalid(CryptoError):
    """A bad owner name, kind or public key handed to the key store or a registry."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "keystore-invalid")


class PseudonymInvalidId(CryptoError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "pseudonym-invalid-id")


class PseudonymMalformed(CryptoError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "pseudonym-malformed")


# --------------------------------------------------------------------------------------------------
# Value types


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A public key as the directory (or ``hub keys export-public``) publishes it."""

    owner: str
    kind: KeyKind
    key_id: str
    public: bytes
    status: KeyStatus = KeyStatus.ACTIVE
    created: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Metadata of a key in the store; ``public`` is None for HMAC keys."""

    owner: str
    kind: KeyKind
    key_id: str
    status: KeyStatus
    created: datetime
    retired: datetime | None = None
    public: bytes | None = None


@dataclass(frozen=True, slots=True)
class SealedDelivery:
    """The two halves of a sealed payload; opening needs both.

    ``ciphertext`` may travel on Kafka and sit in logs. ``wrapped_key`` (the per-delivery data key
    sealed for the recipient's X25519 key) is kept only in the hub's database: deleting it revokes
    the delivery, because nothing else holds the data key.
    """

    ciphertext: bytes
    wrapped_key: bytes
    referral_id: str
    delivery_id: str
    recipient_org: str
    recipient_key_id: str

    def packed(self) -> str:
        """Both halves in one text token, for hub-to-hub sealing where revocation is not needed."""
        return f"{encode_b64url(self.ciphertext)}.{encode_b64url(self.wrapped_key)}"


def unpack_sealed(token: str) -> tuple[bytes, bytes]:
    """Split a ``SealedDelivery.packed()`` token into (ciphertext, wrapped_key)."""
    parts = token.split(".")
    if len(parts) != 2:
        raise CryptoMalformed("a packed sealed token has exactly two base64url parts joined by '.'")
    return decode_b64url(parts[0]), decode_b64url(parts[1])


def encode_b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_b64url(text: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise CryptoMalformed("not a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise CryptoMalformed("not a base64url string") from None


# --------------------------------------------------------------------------------------------------
# Student identifiers: normalised before they are pseudonymised, so the same child yields the same
# pseudonym whichever agency typed the number and however.

_RESIDENT_ID = re.compile(r"\d{17}[\dX]")
# The national student register number (全国学籍号) is "G" + the resident ID for mainland students;
# "J"/"L" prefixes are used for temporary numbers. Stripping the prefix lets a school's register number
# and a hospital's ID-card number link to the same pseudonym.
_STUDENT_REGISTER = re.compile(r"[GJL](\d{17}[\dX])")
_OPAQUE = re.compile(r"[0-9A-Z][0-9A-Z._/]{0,63}")
_CHECK_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"


def _resident_id_valid(value: str) -> bool:
    """GB 11643 check character (ISO 7064 MOD 11-2)."""
    total = sum(int(c) * w for c, w in zip(value[:17], _CHECK_WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11] == value[17]


def normalise_student_id(raw: str, *, issuer: str | None = None) -> str:
    """Canonical form of a student identifier, namespaced by kind.

    Resident ID numbers (and register numbers wrapping one) become ``cnid:<18 chars>`` after a checksum
    check, so a typo is refused rather than silently producing an unlinkable pseudonym. Any other number
    is only unique within the organisation that issued it, so it needs ``issuer`` and becomes
    ``local:<issuer>:<number>``.
    """
    value = unicodedata.normalize("NFKC", raw).upper()
    value = re.sub(r"[\s\-]", "", value)
    if not value:
        raise PseudonymInvalidId("the student identifier is empty")
    register = _STUDENT_REGISTER.fullmatch(value)
    if register:
        value = register.group(1)
    if _RESIDENT_ID.fullmatch(value):
        if not _resident_id_valid(value):
            raise PseudonymInvalidId("the resident ID number fails its check character (mistyped?)")
        return f"cnid:{value}"
    if re.fullmatch(r"\d{16}[\dX]|\d{18}[\dX]", value):
        raise PseudonymInvalidId("looks like a resident ID number with a character missing or extra")
    if not _OPAQUE.fullmatch(value):
        raise PseudonymInvalidId("a local student number may hold only letters, digits, '.', '_' and '/'")
    if not issuer:
        raise PseudonymInvalidId("a local student number needs the issuing organisation id to be unique")
    return f"local:{issuer}:{value}"


# --------------------------------------------------------------------------------------------------
# Ports


class PublicKeyLookup(Protocol):
    """Public keys by owner (organisation id or ``hub``); the directory adapter satisfies this."""

    def keys(self, owner: str, kind: KeyKind) -> Sequence[PublicKey]:
        """All known keys of that kind, the active one first; empty when the owner has none."""

    def active(self, owner: str, kind: KeyKind) -> PublicKey:
        """The key to seal to; raises CryptoUnknownKey when the owner has no active key of the kind."""

    def owner_of(self, key_id: str) -> str | None:
        """Which owner registered this key id (for error messages); None when nobody did."""


class Sealer(Protocol):
    def seal(
        self, plaintext: bytes, *, referral_id: str, recipient_org: str, delivery_id: str
    ) -> SealedDelivery:
        """Seal for the recipient's active X25519 key; raises CryptoUnknownKey if it has none."""


class Opener(Protocol):
    @property
    def owner(self) -> str: ...

    def open_sealed(
        self,
        ciphertext: bytes,
        wrapped_key: bytes,
        *,
        referral_id: str,
        delivery_id: str | None = None,
        recipient_org: str | None = None,
    ) -> bytes:
        """Return the plaintext or raise CryptoMalformed, CryptoContextMismatch (bound to another
        referral/delivery/recipient than given), CryptoWrongKey (addressed to another owner),
        CryptoUnknownKey (key id not in the ring) or CryptoTampered (authentication failed)."""


class Signer(Protocol):
    @property
    def owner(self) -> str: ...

    @property
    def key_id(self) -> str: ...

    def sign(self, data: bytes, *, purpose: SignaturePurpose) -> str:
        """Detached signature token ``ed25519:<key id>:<base64url signature>``."""


class Verifier(Protocol):
    def verify(self, data: bytes, signature: str | None, *, signer: str, purpose: SignaturePurpose) -> str:
        """Return the key id that verified, or raise SignatureMissing, SignatureMalformed,
        SignatureUnknownKey or SignatureInvalid."""


class Pseudonymiser(Protocol):
    @property
    def key_id(self) -> str: ...

    def pseudonym(self, raw_id: str, *, issuer: str | None = None) -> str:
        """``psn:<key id>:<32 base32 chars>`` under the active key."""

    def pseudonyms(self, raw_id: str, *, issuer: str | None = None) -> tuple[str, ...]:
        """The pseudonym under every known key, active first: look records up by any of them."""

    def matches(self, raw_id: str, pseudonym: str, *, issuer: str | None = None) -> bool:
        """Whether ``pseudonym`` (under whichever known key it names) is this student's."""
