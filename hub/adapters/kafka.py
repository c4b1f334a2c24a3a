"""Kafka adapters: the API's async producer (aiokafka) and topic administration (kafka-python)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from hub.domain.error import Unavailable
from hub.settings import KafkaSettings
from schemas.envelope import Envelope
from schemas.topic import ALL_TOPICS, TopicSpec

log = logging.getLogger(__name__)


def encode(event: Envelope) -> bytes:
    return orjson.dumps(event.model_dump(mode="json"))


class KafkaPublisher:
    """acks=all + idempotence: an accepted referral is on every in-sync replica before we answer 202."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._settings.linger_ms,
            max_batch_size=self._settings.batch_size,
            compression_type=None,
            request_timeout_ms=15_000,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, topic: str, key: str, event: Envelope) -> None:
        if self._producer is None:
            raise Unavailable("the Kafka producer is not started", code="broker-unavailable")
        try:
            await self._producer.send_and_wait(topic, encode(event), key=key.encode())
        except KafkaError as exc:
            raise Unavailable(
                f"the broker did not acknowledge: {type(exc).__name__}", code="broker-unavailable"
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
                    topic_configs=spec.configs(settings.replication_factor),
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
            configs=s.configs(settings.replication_factor),
        )
        for s in specs
        if settings.topic_prefix + s.name in existing
    ]
    if resources:
        admin.alter_configs(resources)


def broker_reachable(bootstrap: str, timeout_s: float = 3.0) -> bool:
    try:
        # bootstrap_timeout_ms too: kafka-python 3 otherwise waits 30 s for a broker that is down.
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            client_id="qixin-health",
        )
    except Exception:  # any failure to connect means "not reachable" for a health probe
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()
