"""Dead letters always fit the producer's request limit (issue 11, point 3)."""

from __future__ import annotations

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from streaming.dead_letter import (
    H_OFFSET,
    H_REASON,
    H_SIZE,
    H_TRUNCATED,
    PRODUCER_MAX_REQUEST,
    SourceRef,
    make_dead_letter,
    parse_headers,
)
from streaming.validate import OVERSIZED, Rejection

SRC = SourceRef("learn.items", 3, 12345, 1_700_000_000_000)
WHY = Rejection(OVERSIZED, "record is big " + "é" * 2_000)


def wire_size(key: bytes | None, value: bytes | None, headers: list) -> int:
    """What kafka-python checks against ``max_request_size`` before sending."""
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)


def test_small_record_is_copied_untouched() -> None:
    d = make_dead_letter(b"k", b'{"x":1}', SRC, WHY)
    h = parse_headers(d.headers)
    assert (d.key, d.value) == (b"k", b'{"x":1}')
    assert h[H_TRUNCATED] == "false" and h[H_SIZE] == "7" and h[H_OFFSET] == "12345"
    assert h[H_REASON] == OVERSIZED


@pytest.mark.parametrize(
    ("key_len", "value_len"),
    [(10, 1_048_500), (0, 1_048_500), (10, 1_044_000), (1_048_000, 10), (600_000, 600_000)],
)
def test_big_records_are_truncated_to_fit(key_len: int, value_len: int) -> None:
    key, value = b"k" * key_len, b"v" * value_len
    d = make_dead_letter(key, value, SRC, WHY)
    # the untruncated copy with these headers would not fit: what stalled the consumer
    assert wire_size(key, value, d.headers) > PRODUCER_MAX_REQUEST - 4_096
    assert wire_size(d.key, d.value, d.headers) <= PRODUCER_MAX_REQUEST
    h = parse_headers(d.headers)
    assert h[H_TRUNCATED] == "true" and h[H_SIZE] == str(value_len)
    assert value.startswith(d.value or b"") and key.startswith(d.key or b"")
    assert len(d.value or b"") + len(d.key or b"") > PRODUCER_MAX_REQUEST - 10_000


def test_tombstone_keeps_no_value() -> None:
    d = make_dead_letter(None, None, SRC, Rejection("not_json", "tombstone"))
    h = parse_headers(d.headers)
    assert d.value is None and h[H_SIZE] == "-1" and h[H_TRUNCATED] == "false"
