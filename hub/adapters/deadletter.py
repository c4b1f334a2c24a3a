"""Dead letters for operators: read them from their topic, replay an original after a fix (once)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy.dialects import postgresql, sqlite

from hub.adapters.db import deadletter_replays, insert_once
from hub.domain.error import Conflict, NotFound
from hub.settings import Settings
from schemas.envelope import DeadLetter
from schemas.topic import DEADLETTERS


class DeadLetterAdmin:
    def __init__(self, settings: Settings, engine: sa.Engine) -> None:
        self._settings = settings
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def all(self) -> Iterator[DeadLetter]:
        topic = self._settings.topic(DEADLETTERS.name)
        consumer = KafkaConsumer(
            bootstrap_servers=self._settings.kafka.bootstrap,
            enable_auto_commit=False,
            consumer_timeout_ms=2000,
            client_id="qixin-deadletters",
        )
        try:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
            if not partitions:
                return
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            end = consumer.end_offsets(partitions)
            remaining = {tp for tp in partitions if end[tp] > 0}
            while remaining:
                batch = consumer.poll(timeout_ms=2000)
                if not batch:
                    break
                for tp, records in batch.items():
                    for record in records:
                        yield DeadLetter.model_validate(orjson.loads(record.value))
                    if consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
        finally:
            consumer.close()

    def replayed(self) -> dict[str, datetime]:
        with self._engine.connect() as conn:
            return {r.event_id: r.replayed_at for r in conn.execute(sa.select(deadletter_replays))}

    def get(self, event_id: str) -> DeadLetter:
        for dead in self.all():
            if dead.event_id == event_id or dead.event_id.startswith(event_id):
                return dead
        raise NotFound(f"no dead letter '{event_id}'", code="deadletter-not-found")

    def replay(self, dead: DeadLetter, by: str = "cli") -> None:
        """Produce the original record again to its source topic; each dead letter replays once."""
        with self._engine.begin() as conn:
            claimed = insert_once(
                conn,
                deadletter_replays,
                dict(
                    event_id=dead.event_id,
                    source_topic=dead.source_topic,
                    replayed_at=datetime.now(UTC),
                    replayed_by=by,
                ),
            )
            if not claimed:
                raise Conflict(
                    f"dead letter {dead.event_id} was already replayed", code="deadletter-replayed"
                )
            producer = KafkaProducer(
                bootstrap_servers=self._settings.kafka.bootstrap,
                acks="all",
                enable_idempotence=True,
                max_request_size=self._settings.kafka.max_message_bytes,
            )
            try:
                producer.send(
                    dead.source_topic,
                    value=base64.b64decode(dead.original),
                    key=dead.key.encode() if dead.key else None,
                    headers=[("qixin-replay-of", dead.event_id.encode())],
                ).get(timeout=30)
            finally:
                producer.close()
