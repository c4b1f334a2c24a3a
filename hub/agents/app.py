"""The faust App, and nothing else: built when the worker starts, never at import."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from hub.settings import Settings


def _idempotent_producer() -> None:
    """Make faust's producer idempotent, as the API's is (faust turns it on only in transactions).

    With acks=all alone, a produce retried after a lost acknowledgement can write a record twice;
    the broker's idempotence drops such a retry. Applied once, to the class, in the worker process.
    """
    producer = faust_aiokafka.Producer
    if getattr(producer, "_qixin_idempotent", False):
        return
    extra = producer._settings_extra

    def settings_extra(self: Any) -> Mapping[str, Any]:
        return {**extra(self), "enable_idempotence": True}

    producer._settings_extra = settings_extra  # type: ignore[method-assign]
    producer._qixin_idempotent = True  # type: ignore[attr-defined]


def group_id(settings: Settings) -> str:
    """The faust app id, which is the consumer group: one per worker role and topic prefix."""
    k = settings.kafka
    role = settings.worker.role
    return (
        settings.worker.app_id
        + ("" if role == "all" else f"-{role}")
        + (f"-{k.topic_prefix.strip('.')}" if k.topic_prefix else "")
    )


def _fetch_tuning(settings: Settings) -> None:
    """Set this process's consumer fetch wait and size (``WorkerSettings.fetch_tuning``).

    faust builds its aiokafka consumer with a fixed 1.5 s wait and aiokafka's 1-byte minimum, and
    offers no setting for either; the wrapper sets them on the consumer faust built, before it
    starts (aiokafka hands them to its fetcher at start). Applied to the class, once per process.
    """
    cls = faust_aiokafka.AIOKafkaConsumerThread
    cls._qixin_fetch = settings.worker.fetch_tuning()  # type: ignore[attr-defined]
    if getattr(cls, "_qixin_fetch_wrapped", False):
        return
    create = cls._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms, consumer._fetch_min_bytes = cls._qixin_fetch  # type: ignore[attr-defined]
        return consumer

    cls._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
    cls._qixin_fetch_wrapped = True  # type: ignore[attr-defined]


def make_app(settings: Settings) -> faust.App:
    _idempotent_producer()
    _fetch_tuning(settings)
    k = settings.kafka
    faust_dir = settings.var_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    return faust.App(
        group_id(settings),
        broker=f"kafka://{k.bootstrap.replace(',', ';kafka://')}",
        store="memory://",
        # faust's default is "<app id>-data" in the working directory; keep it with the hub's state.
        datadir=str(faust_dir / "{conf.name}"),
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        topic_allow_declare=True,
        web_enabled=False,
        producer_acks=-1,
        producer_linger_ms=k.linger_ms,
        producer_max_batch_size=k.batch_size,
        producer_max_request_size=k.max_message_bytes,
        consumer_max_fetch_size=k.max_message_bytes,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=100,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
    )
