"""The two ways to the hub: HTTPS to the API (httpx) and straight to Kafka (kafka-python), with retries.

Retries with exponential backoff (full jitter) on 5xx, 429 (honouring Retry-After), connection errors
and broker timeouts; never on another 4xx: a 422 is the record's fault and goes to the bad-rows report.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.common.record import StatusChange
from connectors.common.settings import ConnectorSettings
from hub.adapters.crypto import Ed25519Signer, PublicKeyRegistry, X25519Sealer
from hub.services.crypto_port import HUB_OWNER, SignaturePurpose
from schemas.envelope import InboundSubmission
from schemas.topic import MAX_MESSAGE_BYTES, REFERRALS_INBOUND

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Outgoing:
    """A referral ready to send: the exact Bundle bytes and what identifies them."""

    record_id: str
    message_id: str
    body: bytes
    referral_id: str  # what the hub will call it (sender + message id), known before sending


@dataclass(frozen=True)
class Outcome:
    ok: bool
    referral_id: str | None = None
    status: int | None = None  # HTTP status, when there was one
    code: str = ""  # problem code, or the error class for transport failures
    detail: str = ""
    errors: tuple[dict[str, Any], ...] = ()
    exhausted: bool = False  # retries used up on a temporary failure (a later run may succeed)
    already: bool = False  # a status change the hub had already applied
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    attempts: int = 6

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**attempt)]."""
        return random.uniform(0, min(self.maximum, self.initial * 2**attempt))  # noqa: S311


def backoff_of(settings: ConnectorSettings) -> Backoff:
    return Backoff(settings.backoff_initial_s, settings.backoff_max_s, max(1, settings.max_attempts))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _problem(response: httpx.Response) -> tuple[str, str, tuple[dict[str, Any], ...], dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return f"http-{response.status_code}", response.text[:300], (), {}
    if not isinstance(body, dict):
        return f"http-{response.status_code}", str(body)[:300], (), {}
    errors = tuple(e for e in body.get("errors") or () if isinstance(e, dict))
    return (
        str(body.get("code") or f"http-{response.status_code}"),
        str(body.get("detail") or ""),
        errors,
        body,
    )


# How far along the lifecycle a status is: a Task already at or past the target took this update.
_STAGE = {
    "requested": 0,
    "received": 1,
    "accepted": 2,
    "rejected": 2,
    "in-progress": 3,
    "on-hold": 3,
    "completed": 4,
    "failed": 4,
    "cancelled": 4,
    "entered-in-error": 4,
}


def _superseded(current: str, target: str) -> bool:
    """A replayed update whose target the Task has reached or passed (the HIS resent an old message)."""
    if current == target:
        return True
    return (
        current in _STAGE and target in _STAGE and _STAGE[current] > _STAGE[target] and target != "cancelled"
    )


class HttpsTransport:
    """The hub's HTTP API, authenticated with the agency's API key; submissions signed."""

    def __init__(
        self, settings: ConnectorSettings, signer: Ed25519Signer | None, *, sleep: Sleep = time.sleep
    ) -> None:
        if settings.api_key is None:
            raise ValueError("set QIXIN_CONNECTOR_API_KEY (the agency's API key from `hub apikey create`)")
        self._signer = signer
        self._backoff = backoff_of(settings)
        self._sleep = sleep
        self._client = httpx.Client(
            base_url=settings.endpoint.rstrip("/"),
            timeout=settings.timeout_s,
            verify=settings.verify_tls,
            headers={"Authorization": f"Bearer {settings.api_key.get_secret_value()}"},
            limits=httpx.Limits(max_connections=max(4, settings.concurrency * 2)),
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response | Outcome:
        """The response of the first attempt that is not a temporary failure, or an exhausted Outcome."""
        last = ""
        code = ""
        status: int | None = None
        for attempt in range(self._backoff.attempts):
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                code, last, status = type(exc).__name__, str(exc)[:300] or type(exc).__name__, None
                wait = self._backoff.delay(attempt)
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response
                code, last, _, _ = _problem(response)
                status = response.status_code
                wait = _retry_after(response) or self._backoff.delay(attempt)
            if attempt + 1 < self._backoff.attempts:
                self._sleep(wait)
        return Outcome(False, status=status, code=code or "unavailable", detail=last, exhausted=True)

    def submit(self, out: Outgoing) -> Outcome:
        headers = {"Content-Type": "application/fhir+json"}
        if self._signer is not None:
            headers["X-Qixin-Signature"] = self._signer.sign(out.body, purpose=SignaturePurpose.SUBMISSION)
        answer = self._call("POST", "/v1/referrals", content=out.body, headers=headers)
        if isinstance(answer, Outcome):
            return answer
        if answer.status_code in (200, 201, 202):
            body = answer.json()
            return Outcome(
                True, referral_id=str(body.get("referral_id")), status=answer.status_code, body=body
            )
        code, detail, errors, body = _problem(answer)
        return Outcome(False, status=answer.status_code, code=code, detail=detail, errors=errors, body=body)

    def change_status(self, change: StatusChange) -> Outcome:
        answer = self._call("POST", f"/v1/tasks/{change.task_id}/status", json=change.body())
        if isinstance(answer, Outcome):
            return answer
        if answer.status_code in (200, 202):
            body = answer.json()
            return Outcome(True, referral_id=body.get("referral_id"), status=answer.status_code, body=body)
        code, detail, errors, body = _problem(answer)
        # A replayed update (the HIS re-sent its message, or the outbox was lost): the hub already moved
        # the task there. Same answer as success, flagged, so a re-run is quiet rather than an error.
        already = answer.status_code == 409 and any(
            _superseded(str(e.get("from")), change.status) for e in errors
        )
        return Outcome(
            already,
            status=answer.status_code,
            code=code,
            detail=detail,
            errors=errors,
            already=already,
            body=body,
        )

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any] | Outcome:
        answer = self._call("GET", path, params=params)
        if isinstance(answer, Outcome):
            return answer
        if answer.status_code == 200:
            body = answer.json()
            return body if isinstance(body, dict) else {"items": body}
        code, detail, errors, body = _problem(answer)
        return Outcome(False, status=answer.status_code, code=code, detail=detail, errors=errors, body=body)

    def inbox(self, statuses: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
        """Every delivery in the agency's inbox (all pages)."""
        offset: int | None = 0
        while offset is not None:
            page = self.get_json("/v1/inbox", {"limit": 500, "offset": offset, "status": list(statuses)})
            if isinstance(page, Outcome):
                raise TransportFailed(page)
            yield from page.get("items", [])
            offset = page.get("next_offset")


class TransportFailed(RuntimeError):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        super().__init__(f"{outcome.code}: {outcome.detail}" if outcome.detail else outcome.code)


class KafkaTransport:
    """Produces ``InboundSubmission`` records to ``<prefix>referrals.inbound``, key = the sender org.

    The Bundle bytes are sealed for the hub's X25519 key, bound to the submission id
    (referral_id = submission_id, delivery_id = "inbound-<submission_id>", recipient "hub"), and signed
    by the agency; acks=all with idempotence, so an acknowledged record is on every in-sync replica.
    """

    def __init__(
        self,
        settings: ConnectorSettings,
        signer: Ed25519Signer,
        hub_keys: PublicKeyRegistry,
        *,
        sleep: Sleep = time.sleep,
    ) -> None:
        from kafka import KafkaProducer

        self._settings = settings
        self._signer = signer
        self._sealer = X25519Sealer(hub_keys)
        self._backoff = backoff_of(settings)
        self._sleep = sleep
        self._topic = settings.topic(REFERRALS_INBOUND.name)
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            batch_size=262_144,
            retries=2_147_483_647,
            delivery_timeout_ms=int(settings.timeout_s * 1000) + 5000,
            request_timeout_ms=int(settings.timeout_s * 1000),
            max_block_ms=int(settings.timeout_s * 1000),
            max_request_size=MAX_MESSAGE_BYTES,
        )

    def close(self) -> None:
        self._producer.close(timeout=10)

    @staticmethod
    def submission_id(out: Outgoing) -> str:
        return f"sub-{out.record_id}"

    def envelope(self, out: Outgoing, at: datetime | None = None) -> bytes:
        submission_id = self.submission_id(out)
        sealed = self._sealer.seal(
            out.body,
            referral_id=submission_id,
            recipient_org=HUB_OWNER,
            delivery_id=f"inbound-{submission_id}",
        )
        record = InboundSubmission(
            submission_id=submission_id,
            sender_org=self._settings.agency,
            sealed_bundle=sealed.packed(),
            bundle_key_id=sealed.recipient_key_id,
            signature=self._signer.sign(out.body, purpose=SignaturePurpose.SUBMISSION),
            sent_at=at or datetime.now(UTC),
        )
        return record.model_dump_json().encode("utf-8")

    def submit_many(self, outs: list[Outgoing]) -> list[Outcome]:
        """Produce a batch and wait for every acknowledgement; failed ones are retried with backoff."""
        from kafka.errors import KafkaError

        results: dict[int, Outcome] = {}
        pending = list(range(len(outs)))
        key = self._settings.agency.encode("utf-8")
        for attempt in range(self._backoff.attempts):
            futures = []
            for index in pending:
                try:
                    futures.append(
                        (index, self._producer.send(self._topic, key=key, value=self.envelope(outs[index])))
                    )
                except KafkaError as exc:
                    futures.append((index, exc))
            self._producer.flush(timeout=self._settings.timeout_s)
            retry: list[int] = []
            for index, future in futures:
                if isinstance(future, Exception):
                    error: Exception | None = future
                else:
                    try:
                        future.get(timeout=self._settings.timeout_s)
                        error = None
                    except KafkaError as exc:
                        error = exc
                if error is None:
                    results[index] = Outcome(True, referral_id=outs[index].referral_id)
                elif getattr(error, "retriable", True):
                    retry.append(index)
                    results[index] = Outcome(
                        False, code=type(error).__name__, detail=str(error)[:300], exhausted=True
                    )
                else:
                    results[index] = Outcome(False, code=type(error).__name__, detail=str(error)[:300])
            pending = retry
            if not pending:
                break
            if attempt + 1 < self._backoff.attempts:
                self._sleep(self._backoff.delay(attempt))
        return [results[i] for i in range(len(outs))]
