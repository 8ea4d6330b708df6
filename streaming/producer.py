"""Producer API for event producers: validated events, keyed by entity id."""

from __future__ import annotations

import logging
from typing import Any

from learn_core.events import Event, ItemCreated, entity_key, to_json_bytes
from streaming.kafka_io import make_producer
from streaming.settings import KafkaSettings

log = logging.getLogger(__name__)


class EventProducer:
    """Publishes typed events to their topic, keyed so that one entity stays on one partition."""

    def __init__(
        self, bootstrap: str, settings: KafkaSettings, producer: Any | None = None
    ) -> None:
        self.settings = settings
        self._producer = producer or make_producer(bootstrap)
        self.sent = 0

    def topic_for(self, event: Event) -> str:
        s = self.settings
        return s.items_topic if isinstance(event, ItemCreated) else s.interactions_topic

    def send(self, event: Event, timestamp_ms: int | None = None) -> Any:
        """Queue one event; returns kafka-python's future. Call ``flush()`` to wait."""
        self.sent += 1
        return self._producer.send(
            self.topic_for(event),
            key=entity_key(event).encode("utf-8"),
            value=to_json_bytes(event),
            timestamp_ms=timestamp_ms,
        )

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None) -> Any:
        """Pre-serialised bytes: the replay fast path, and tests of the dead-letter path."""
        return self._producer.send(topic, key=key, value=value)

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout=timeout)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
