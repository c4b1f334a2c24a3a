"""Publish an audit event from a command-line action (key changes); kept locally if no broker answers."""

from __future__ import annotations

import typer

from hub.settings import load_settings
from schemas.audit import AuditEvent
from schemas.topic import AUDIT_EVENTS


def _answers(bootstrap: str) -> bool:
    import socket

    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1.0):
                return True
        except (OSError, ValueError):
            continue
    return False


def publish(event: AuditEvent) -> bool:
    import orjson
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    settings = load_settings()
    if not _answers(settings.kafka.bootstrap):
        typer.echo("warning: no broker answers; the key journal keeps this change for the audit", err=True)
        return False
    try:
        producer = KafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap,
            acks="all",
            request_timeout_ms=10_000,
            max_block_ms=10_000,
        )
        try:
            producer.send(
                settings.topic(AUDIT_EVENTS.name),
                key=event.event_id.encode(),
                value=orjson.dumps(event.model_dump(mode="json")),
            ).get(timeout=15)
        finally:
            producer.close()
        return True
    except KafkaError as exc:
        # The key store's journal keeps the change; `hub audit` picks up nothing until it is re-sent.
        typer.echo(f"warning: audit event not sent ({type(exc).__name__}); the key journal has it", err=True)
        return False
