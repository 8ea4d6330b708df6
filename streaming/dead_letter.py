"""Dead-letter records: errors as data at the Kafka boundary.

The dead-letter record keeps the original key and value bytes untouched (so a
fixed consumer can re-ingest them) and carries the context in headers, the
convention Kafka Connect uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from streaming.validate import Rejection

H_REASON = "dlq.reason"
H_DETAIL = "dlq.detail"
H_TOPIC = "dlq.source.topic"
H_PARTITION = "dlq.source.partition"
H_OFFSET = "dlq.source.offset"
H_TIMESTAMP = "dlq.source.timestamp"


@dataclass(frozen=True)
class SourceRef:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def make_dead_letter(
    key: bytes | None, value: bytes | None, src: SourceRef, why: Rejection
) -> DeadLetter:
    headers = [
        (H_REASON, why.reason.encode()),
        (H_DETAIL, why.detail.encode("utf-8", "replace")),
        (H_TOPIC, src.topic.encode()),
        (H_PARTITION, str(src.partition).encode()),
        (H_OFFSET, str(src.offset).encode()),
    ]
    if src.timestamp_ms is not None:
        headers.append((H_TIMESTAMP, str(src.timestamp_ms).encode()))
    return DeadLetter(key, value, headers)


def parse_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Decode dead-letter headers (for tools and tests that read the DLQ)."""
    return {k: v.decode("utf-8", "replace") for k, v in (headers or []) if k.startswith("dlq.")}


def describe(headers: list[tuple[str, bytes]] | None, value: bytes | None) -> str:
    h = parse_headers(headers)
    return json.dumps({**h, "value_bytes": None if value is None else len(value)})
