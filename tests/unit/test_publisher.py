"""The API's producer: every wait is bounded, nothing unacknowledged counts as accepted, it reconnects.

An in-memory broker stands in for aiokafka (the real one is exercised by the integration tests).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, NotLeaderForPartitionError

from hub.adapters.kafka import KafkaPublisher
from hub.domain.error import HubError, Unavailable
from hub.services.port import Caller
from hub.services.submission import SubmitReferral
from hub.settings import KafkaSettings
from schemas.envelope import ConsentSummary
from tests.support.hub import sample

EVENT = ConsentSummary(consent_id="c-1", status="active", grantor="guardian")
TIMEOUT = 0.3


@dataclass
class Broker:
    """What the producer meets: reachable or not, acknowledging or silent, or failing with an error."""

    reachable: bool = True
    acknowledges: bool = True
    error: Exception | None = None
    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    starts: int = 0
    stops: int = 0

    def producer(self) -> Producer:
        return Producer(self)


class Producer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def start(self) -> None:
        self.broker.starts += 1
        if not self.broker.reachable:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    async def stop(self) -> None:
        self.broker.stops += 1

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> Any:
        if self.broker.error is not None:
            raise self.broker.error
        if not self.broker.acknowledges:
            await asyncio.Event().wait()  # silent until the caller gives up
        self.broker.sent.append((topic, value, key))


def publisher(broker: Broker, timeout: float = TIMEOUT) -> KafkaPublisher:
    return KafkaPublisher(KafkaSettings(publish_timeout_s=timeout), producer_factory=broker.producer)


async def test_an_acknowledged_event_is_published() -> None:
    broker = Broker()
    kafka = publisher(broker)
    await kafka.start()
    await kafka.publish("t.referrals.submitted", "ref-1", EVENT)
    await kafka.stop()
    assert [(t, k) for t, _, k in broker.sent] == [("t.referrals.submitted", b"ref-1")]
    assert broker.stops == 1


async def test_no_acknowledgement_in_time_is_503_with_retry_after_and_nothing_sent() -> None:
    broker = Broker(acknowledges=False)
    kafka = publisher(broker)
    await kafka.start()
    started = time.monotonic()
    with pytest.raises(Unavailable) as refused:
        await kafka.publish("t", "ref-1", EVENT)
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 0.5
    assert refused.value.status == 503
    assert refused.value.code == "broker-unavailable"
    assert refused.value.retry_after == 1
    assert "not accepted" in refused.value.message
    assert broker.sent == []
    await kafka.stop()


async def test_an_unreachable_broker_does_not_stop_the_api_and_is_used_once_back() -> None:
    broker = Broker(reachable=False)
    kafka = publisher(broker, timeout=1.5)
    started = time.monotonic()
    await kafka.start()  # returns after the first failed attempt, not once connected
    assert time.monotonic() - started < 0.5
    with pytest.raises(Unavailable):
        await kafka.publish("t", "ref-1", EVENT)
    broker.reachable = True  # the background retry (backoff up to 5 s) connects
    await kafka.publish("t", "ref-2", EVENT)
    assert [k for _, _, k in broker.sent] == [b"ref-2"]
    assert broker.starts >= 2
    await kafka.stop()


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (NotLeaderForPartitionError(), 503, "broker-unavailable"),
        (KafkaConnectionError("connection reset"), 503, "broker-unavailable"),
        (MessageSizeTooLargeError(), 413, "payload-too-large"),
    ],
)
async def test_producer_errors_become_hub_errors(error: Exception, status: int, code: str) -> None:
    kafka = publisher(Broker(error=error))
    await kafka.start()
    with pytest.raises(HubError) as refused:
        await kafka.publish("t", "ref-1", EVENT)
    assert (refused.value.status, refused.value.code) == (status, code)
    await kafka.stop()


async def test_publishing_before_start_is_503() -> None:
    with pytest.raises(Unavailable) as refused:
        await publisher(Broker()).publish("t", "ref-1", EVENT)
    assert refused.value.code == "broker-unavailable"


class NowClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class NoSeal:
    def seal_for_hub(self, referral_id: str, payload: bytes) -> tuple[str, str]:
        return "sealed", "key-1"


async def test_a_referral_the_broker_did_not_acknowledge_is_not_accepted_and_says_re_send() -> None:
    broker = Broker(acknowledges=False)
    kafka = publisher(broker)
    await kafka.start()
    submit = SubmitReferral(kafka, NowClock(), lambda name: name, NoSeal(), signatures=None)
    bundle = sample("referral-school-camhs-high.json")
    with pytest.raises(Unavailable) as refused:
        await submit(Caller("school-songjiang-no2-middle", "system"), bundle, b"{}")
    await kafka.stop()
    assert refused.value.code == "broker-unavailable"
    assert refused.value.retry_after == 1
    assert "NOT accepted" in refused.value.message
    assert "same MessageHeader id" in refused.value.message
    assert broker.sent == []
