"""EventPublisher over the worker's own faust producer (used by steps that publish through services)."""

from __future__ import annotations

import faust
import orjson

from schemas.envelope import Envelope


class FaustPublisher:
    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._topics: dict[str, faust.TopicT] = {}

    async def publish(self, topic: str, key: str, event: Envelope) -> None:
        target = self._topics.get(topic)
        if target is None:
            target = self._topics[topic] = self._app.topic(
                topic, value_serializer="raw", key_serializer="raw"
            )
        pending = await target.send(key=key.encode(), value=orjson.dumps(event.model_dump(mode="json")))
        await pending  # acknowledged by the broker before the caller goes on
