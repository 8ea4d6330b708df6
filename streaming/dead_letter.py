"""Dead-letter records: errors as data at the Kafka boundary.

The dead-letter record keeps the original key and value bytes (so a fixed consumer
can re-ingest them) and carries the context in headers, the convention Kafka Connect
uses. One exception: a copy that would not fit the producer's request limit is
truncated (``dlq.truncated: true``, original size in ``dlq.source.size``; the source
topic/partition/offset headers locate the full record). Otherwise a record near the
broker's 1 MB limit, which the broker accepted, could never be dead-lettered and the
consumer would retry that batch forever.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

from streaming.validate import Rejection

H_REASON = "dlq.reason"
H_DETAIL = "dlq.detail"
H_TOPIC = "dlq.source.topic"
H_PARTITION = "dlq.source.partition"
H_OFFSET = "dlq.source.offset"
H_TIMESTAMP = "dlq.source.timestamp"
H_SIZE = "dlq.source.size"
H_TRUNCATED = "dlq.truncated"

#: kafka-python's default ``max_request_size`` (the DLQ producer keeps it).
PRODUCER_MAX_REQUEST = 1_048_576
#: Room left for the record and batch framing (varints, CRC, header names): generous.
_FRAMING = 4_096
_MAX_DETAIL = 1_000


class SourceRef(NamedTuple):
    """Where a record came from. A tuple: one is built per record on the polling thread."""

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
    key: bytes | None,
    value: bytes | None,
    src: SourceRef,
    why: Rejection,
    max_bytes: int = PRODUCER_MAX_REQUEST,
) -> DeadLetter:
    """The dead letter of one record; key + value + headers stay within ``max_bytes``."""
    headers = [
        (H_REASON, why.reason.encode()),
        (H_DETAIL, why.detail.encode("utf-8", "replace")[:_MAX_DETAIL]),
        (H_TOPIC, src.topic.encode()),
        (H_PARTITION, str(src.partition).encode()),
        (H_OFFSET, str(src.offset).encode()),
    ]
    if src.timestamp_ms is not None:
        headers.append((H_TIMESTAMP, str(src.timestamp_ms).encode()))
    headers.append((H_SIZE, str(-1 if value is None else len(value)).encode()))
    room = max_bytes - _FRAMING - sum(len(k) + len(v) for k, v in headers) - len(H_TRUNCATED) - 5
    n_key, n_value = len(key or b""), len(value or b"")
    truncated = n_key + n_value > room
    if truncated:
        # The value goes first; a key alone over the limit is cut as well.
        key = None if key is None else key[: max(room, 0)]
        value = None if value is None else value[: max(room - len(key or b""), 0)]
    headers.append((H_TRUNCATED, b"true" if truncated else b"false"))
    return DeadLetter(key, value, headers)


def parse_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Decode dead-letter headers (for tools and tests that read the DLQ)."""
    return {k: v.decode("utf-8", "replace") for k, v in (headers or []) if k.startswith("dlq.")}


def describe(headers: list[tuple[str, bytes]] | None, value: bytes | None) -> str:
    h = parse_headers(headers)
    return json.dumps({**h, "value_bytes": None if value is None else len(value)})
