"""Crypto wiring for the pipeline: intake sealed for the hub, views sealed per recipient, signatures."""

from __future__ import annotations

import threading
from datetime import datetime

from hub.adapters.crypto import Ed25519Verifier, PublicKeyRegistry, X25519Sealer
from hub.adapters.keystore import KeyStore
from hub.services.crypto_port import (
    HUB_OWNER,
    CryptoUnknownKey,
    KeyKind,
    SignaturePurpose,
    SignatureUnknownKey,
    decode_b64url,
    encode_b64url,
    unpack_sealed,
)
from hub.services.port import StoredSeal
from hub.settings import KeySettings, Settings


def open_or_initialise(settings: KeySettings) -> KeyStore:
    """The hub's key store; created with the hub's keys on first use (embedded defaults)."""
    try:
        return KeyStore.open(settings)
    except Exception:
        KeyStore.initialise(settings)
        return KeyStore.open(settings)


def open_with_directory_keys(settings: Settings) -> KeyStore:
    """``open_or_initialise`` plus the hub's signing key and every directory organisation's keys.

    Demo custody creates a missing organisation key on first use; several processes making that
    first use at once would race, so benchmarks and multi-process tests create them all up front.
    """
    from hub.adapters.directory import load_directory

    store = open_or_initialise(settings.keys)
    store.ensure(HUB_OWNER, KeyKind.ED25519)
    for organisation in load_directory(settings.rules.directory_file).organisations:
        store.ensure(organisation.id, KeyKind.X25519)
        store.ensure(organisation.id, KeyKind.ED25519)
    return store


class _Registry:
    """Public keys from the store, refreshed on a miss; in demo custody a missing org key is created."""

    def __init__(self, store: KeyStore, demo_custody: bool) -> None:
        self._store = store
        self._demo = demo_custody
        self._lock = threading.Lock()
        self.current: PublicKeyRegistry = store.public_registry()

    def active(self, owner: str, kind: KeyKind) -> object:
        try:
            return self.current.active(owner, kind)
        except CryptoUnknownKey:
            with self._lock:
                self._store.reload()
                if self._demo:
                    self._store.ensure(owner, kind)
                self.current = self._store.public_registry()
            return self.current.active(owner, kind)


class HubSealing:
    """Implements the intake sealer (API), the intake opener and the delivery sealer (worker)."""

    def __init__(self, store: KeyStore, demo_custody: bool) -> None:
        self._store = store
        self._registry = _Registry(store, demo_custody)
        self._opener = store.opener(HUB_OWNER)
        self._signer = store.signer(HUB_OWNER)
        self._sealer_for: tuple[PublicKeyRegistry, X25519Sealer] | None = None

    def _sealer(self) -> X25519Sealer:
        """One sealer (with its cache of public key objects) per registry; renewed after a reload."""
        current = self._registry.current
        cached = self._sealer_for
        if cached is None or cached[0] is not current:
            cached = self._sealer_for = (current, X25519Sealer(current))
        return cached[1]

    # -- intake: the Bundle on referrals.submitted is readable by the hub only -----------------------
    def seal_for_hub(self, referral_id: str, payload: bytes) -> tuple[str, str]:
        sealed = self._sealer().seal(
            payload, referral_id=referral_id, recipient_org=HUB_OWNER, delivery_id=f"intake-{referral_id}"
        )
        return sealed.packed(), sealed.recipient_key_id

    def open_intake(self, referral_id: str, token: str) -> bytes:
        ciphertext, wrapped = unpack_sealed(token)
        return self._opener.open_sealed(
            ciphertext,
            wrapped,
            referral_id=referral_id,
            delivery_id=f"intake-{referral_id}",
            recipient_org=HUB_OWNER,
        )

    def open_inbound(self, submission_id: str, token: str) -> bytes:
        """A connector's Kafka submission, sealed for the hub with the submission id as context."""
        ciphertext, wrapped = unpack_sealed(token)
        return self._opener.open_sealed(
            ciphertext,
            wrapped,
            referral_id=submission_id,
            delivery_id=f"inbound-{submission_id}",
            recipient_org=HUB_OWNER,
        )

    # -- notes (feedback to the referrer): sealed for one organisation ---------------------------------
    def seal_note(self, org: str, referral_id: str, note_id: str, text: bytes) -> str:
        self._registry.active(org, KeyKind.X25519)  # creates it in demo custody
        sealed = self._sealer().seal(
            text, referral_id=referral_id, recipient_org=org, delivery_id=f"note-{note_id}"
        )
        return sealed.packed()

    def open_note(self, org: str, referral_id: str, note_id: str, token: str) -> bytes:
        ciphertext, wrapped = unpack_sealed(token)
        return self._store.opener(org).open_sealed(
            ciphertext, wrapped, referral_id=referral_id, delivery_id=f"note-{note_id}", recipient_org=org
        )

    # -- deliveries: sealed for the recipient, signed by the hub -------------------------------------
    def seal_delivery(
        self,
        view: bytes,
        *,
        referral_id: str,
        delivery_id: str,
        recipient_org: str,
        consent_ids: tuple[str, ...],
        at: datetime,
    ) -> StoredSeal:
        self._registry.active(recipient_org, KeyKind.X25519)  # creates it in demo custody
        sealed = self._sealer().seal(
            view, referral_id=referral_id, recipient_org=recipient_org, delivery_id=delivery_id
        )
        return StoredSeal(
            delivery_id=delivery_id,
            referral_id=referral_id,
            recipient_org=recipient_org,
            recipient_key_id=sealed.recipient_key_id,
            ciphertext=encode_b64url(sealed.ciphertext),
            wrapped_key=encode_b64url(sealed.wrapped_key),
            signature=self._signer.sign(sealed.ciphertext, purpose=SignaturePurpose.DELIVERY),
            consent_ids=consent_ids,
            created_at=at,
        )

    def open_delivery(self, seal: StoredSeal) -> bytes:
        """Open a delivery on the recipient's behalf (demo custody: the pages decrypt server-side)."""
        if seal.wrapped_key is None:
            from hub.domain.error import Conflict

            raise Conflict("this delivery was withdrawn: its key was destroyed", code="delivery-withdrawn")
        Ed25519Verifier(self._registry.current).verify(
            decode_b64url(seal.ciphertext),
            seal.signature,
            signer=HUB_OWNER,
            purpose=SignaturePurpose.DELIVERY,
        )
        return self._store.opener(seal.recipient_org).open_sealed(
            decode_b64url(seal.ciphertext),
            decode_b64url(seal.wrapped_key),
            referral_id=seal.referral_id,
            delivery_id=seal.delivery_id,
            recipient_org=seal.recipient_org,
        )


class SubmissionVerifier:
    """Checks the sender's Ed25519 signature over the exact request body."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        # One verifier per key registry: it caches the parsed public keys across requests.
        self._verifier = Ed25519Verifier(store.public_registry())

    def verify(self, body: bytes, signature: str | None, sender_org: str) -> str:
        try:
            return self._verifier.verify(
                body, signature, signer=sender_org, purpose=SignaturePurpose.SUBMISSION
            )
        except SignatureUnknownKey:
            # A key registered after this process started: look again once.
            self._store.reload()
            self._verifier = Ed25519Verifier(self._store.public_registry())
            return self._verifier.verify(
                body, signature, signer=sender_org, purpose=SignaturePurpose.SUBMISSION
            )


def sign_as(store: KeyStore, org: str, body: bytes) -> str:
    """Sign a submission as ``org`` with its key in this store (demo custody; connectors hold their own)."""
    store.ensure(org, KeyKind.ED25519)
    return store.signer(org).sign(body, purpose=SignaturePurpose.SUBMISSION)
