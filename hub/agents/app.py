"""The faust App, and nothing else: built when the worker starts, never at import."""

from __future__ import annotations

import faust

from hub.settings import Settings


def make_app(settings: Settings) -> faust.App:
    k = settings.kafka
    return faust.App(
        settings.worker.app_id + (f"-{k.topic_prefix.strip('.')}" if k.topic_prefix else ""),
        broker=f"kafka://{k.bootstrap.replace(',', ';kafka://')}",
        store="memory://",
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        topic_allow_declare=True,
        web_enabled=False,
        producer_acks=-1,
        producer_linger_ms=k.linger_ms,
        producer_max_batch_size=k.batch_size,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=100,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
    )
