"""The worker's wait for the group coordinator, against the real broker."""

from __future__ import annotations

import uuid

import pytest

from hub.adapters.kafka import wait_for_group_coordinator
from hub.settings import KafkaSettings

pytestmark = pytest.mark.integration


def test_a_running_broker_coordinates_a_new_group(kafka: str) -> None:
    ready = wait_for_group_coordinator(KafkaSettings(bootstrap=kafka), f"qixin-wait-{uuid.uuid4().hex[:8]}")

    assert ready is True


def test_no_broker_is_not_ready_and_does_not_raise() -> None:
    # Nothing listens on port 1: the worker starts anyway (its consumer keeps trying).
    assert wait_for_group_coordinator(KafkaSettings(bootstrap="127.0.0.1:1"), "qixin-wait", 2.0) is False
