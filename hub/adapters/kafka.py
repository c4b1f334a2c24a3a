"""Kafka adapters: the API's async producer (aiokafka) and topic administration (kafka-python)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import MessageSizeTooLargeError
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
    TopicAlreadyExistsError,
)
from kafka.errors import KafkaError as KafkaPythonError

from hub.domain.error import HubError, Unavailable
from hub.settings import KafkaSettings
from schemas.envelope import Envelope
from schemas.topic import ALL_TOPICS, TopicSpec

log = logging.getLogger(__name__)


def encode(event: Envelope) -> bytes:
    return orjson.dumps(event.model_dump(mode="json"))


class Producer(Protocol):
    """What the publisher needs of an aiokafka producer (tests pass an in-memory one)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> Any: ...


class KafkaPublisher:
    """acks=all + idempotence: an accepted referral is on every in-sync replica before we answer 202.

    Every wait is bounded by ``publish_timeout_s``: without the broker's acknowledgement by then, the
    request fails with 503 ``broker-unavailable`` and Retry-After instead of hanging until the broker
    returns (the idempotent producer never gives up on a record by itself). The producer connects in
    the background and keeps trying, so the API starts, and serves reads and /healthz, while the
    broker is unreachable.
    """

    def __init__(
        self, settings: KafkaSettings, producer_factory: Callable[[], Producer] | None = None
    ) -> None:
        self._settings = settings
        self._timeout = settings.publish_timeout_s
        self._retry_after = max(1, math.ceil(self._timeout))
        self._new_producer = producer_factory or self._aiokafka_producer
        self._producer: Producer | None = None
        self._connected: asyncio.Event | None = None
        self._connector: asyncio.Task[None] | None = None

    def _aiokafka_producer(self) -> Producer:
        return AIOKafkaProducer(
            bootstrap_servers=self._settings.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._settings.linger_ms,
            max_batch_size=self._settings.batch_size,
            compression_type=None,
            request_timeout_ms=15_000,
            max_request_size=self._settings.max_message_bytes,
        )

    async def start(self) -> None:
        """Connect; if the broker cannot be reached, return anyway and keep trying in the background."""
        self._connected = asyncio.Event()
        tried = asyncio.Event()
        self._connector = asyncio.create_task(self._connect(tried), name="kafka-producer-connect")
        await tried.wait()

    async def _connect(self, tried: asyncio.Event) -> None:
        assert self._connected is not None
        backoff, failures = 0.5, 0
        while True:
            producer = self._new_producer()
            try:
                await asyncio.wait_for(producer.start(), self._timeout)
            except asyncio.CancelledError:
                await self._close(producer)
                raise
            except Exception as exc:  # any failure to connect: try again, the API answers 503 meanwhile
                await self._close(producer)
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "the Kafka broker is unreachable; writes answer 503 until it is back",
                    extra={
                        "error": type(exc).__name__,
                        "bootstrap": self._settings.bootstrap,
                        "attempt": failures,
                    },
                )
                tried.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self._producer = producer
            self._connected.set()
            tried.set()
            if failures:
                log.warning("the Kafka broker is reachable again", extra={"attempts": failures + 1})
            return

    async def _close(self, producer: Producer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), self._timeout)
        except Exception as exc:  # closing a producer that never connected, or is stuck, must not raise
            log.debug("Kafka producer did not close cleanly", extra={"error": type(exc).__name__})

    async def stop(self) -> None:
        connector, self._connector = self._connector, None
        if connector is not None:
            connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connector
        producer, self._producer = self._producer, None
        self._connected = None
        if producer is not None:
            # Flushes what is pending, but not forever: a record not acknowledged by now belongs to a
            # request that was answered 503 (the server lets requests finish before it shuts down).
            await self._close(producer)

    async def publish(self, topic: str, key: str, event: Envelope) -> None:
        value = encode(event)
        producer, connected = self._producer, self._connected
        if connected is None:
            raise Unavailable("the Kafka producer is not started", code="broker-unavailable")
        try:
            async with asyncio.timeout(self._timeout):
                if producer is None:
                    await connected.wait()
                    producer = self._producer
                    assert producer is not None
                await producer.send_and_wait(topic, value, key=key.encode())
        except TimeoutError:
            raise Unavailable(
                f"the message broker did not acknowledge within {self._timeout:g} s, so the request "
                "was not accepted",
                code="broker-unavailable",
                retry_after=self._retry_after,
            ) from None
        except MessageSizeTooLargeError:
            raise HubError(
                "the event is larger than the broker takes, so the request was not accepted",
                code="payload-too-large",
                status=413,
            ) from None
        except AIOKafkaError as exc:  # aiokafka's own family (not kafka-python's KafkaError)
            raise Unavailable(
                f"the message broker did not acknowledge ({type(exc).__name__}), so the request was "
                "not accepted",
                code="broker-unavailable",
                retry_after=self._retry_after,
            ) from exc


@dataclass(frozen=True)
class TopicResult:
    name: str
    created: bool
    partitions: int


def apply_topics(settings: KafkaSettings, specs: Iterable[TopicSpec] = ALL_TOPICS) -> list[TopicResult]:
    """Create missing topics and align configs of existing ones; safe to run any number of times."""
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap, client_id="qixin-topics", request_timeout_ms=30_000
    )
    try:
        existing = set(admin.list_topics())
        results: list[TopicResult] = []
        missing: list[NewTopic] = []
        for spec in specs:
            name = settings.topic_prefix + spec.name
            partitions = spec.partitions or settings.partitions
            if name in existing:
                results.append(TopicResult(name, False, partitions))
                continue
            missing.append(
                NewTopic(
                    name=name,
                    num_partitions=partitions,
                    replication_factor=settings.replication_factor,
                    topic_configs=spec.configs(settings.replication_factor, settings.max_message_bytes),
                )
            )
            results.append(TopicResult(name, True, partitions))
        if missing:
            # A concurrent apply may win the race; the end state is the same.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing, validate_only=False)
        _align_configs(admin, settings, specs, existing)
        return results
    finally:
        admin.close()


def _align_configs(
    admin: KafkaAdminClient, settings: KafkaSettings, specs: Iterable[TopicSpec], existing: set[str]
) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    resources = [
        ConfigResource(
            ConfigResourceType.TOPIC,
            settings.topic_prefix + s.name,
            configs=s.configs(settings.replication_factor, settings.max_message_bytes),
        )
        for s in specs
        if settings.topic_prefix + s.name in existing
    ]
    if resources:
        admin.alter_configs(resources)


def wait_for_group_coordinator(settings: KafkaSettings, group: str, timeout_s: float = 60.0) -> bool:
    """Wait until the broker can coordinate consumer group ``group``; False if it could not in time.

    A fresh broker creates its offsets topic on the first FindCoordinator request and answers
    COORDINATOR_NOT_AVAILABLE until the topic is loaded. A worker started then would do no harm
    (its consumer retries) but aiokafka logs each refusal at ERROR: `hub worker` waits here first.
    """
    try:
        admin = _admin(settings.bootstrap, "qixin-coordinator", min(timeout_s, 30.0))
    except KafkaPythonError:  # no broker yet: the worker starts anyway and its consumer keeps trying
        return False
    try:
        return retry_coordinator(lambda: admin.describe_groups([group]), timeout_s)
    except KafkaPythonError:  # anything else the broker said: not this wait's business
        return False
    finally:
        admin.close()


def retry_coordinator(
    ask: Callable[[], Any],
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.monotonic,
) -> bool:
    """Call ``ask`` until it answers without a coordinator error; False once ``timeout_s`` is over.

    Only the coordinator's "not yet" errors are retried; any other error is raised.
    """
    deadline = now() + timeout_s
    delay = 0.1
    while True:
        try:
            ask()
            return True
        except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError):
            if now() + delay > deadline:
                return False
            sleep(delay)
            delay = min(delay * 2, 1.0)


def broker_reachable(bootstrap: str, timeout_s: float = 3.0) -> bool:
    try:
        admin = _admin(bootstrap, "qixin-health", timeout_s)
    except Exception:  # any failure to connect means "not reachable" for a health probe
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


def _admin(bootstrap: str, client_id: str, timeout_s: float) -> KafkaAdminClient:
    """An admin client that gives up after ``timeout_s``, connecting as well as asking (kafka-python
    3 otherwise waits 30 s for a broker that is down)."""
    timeout_ms = int(timeout_s * 1000)
    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )
