"""The pure parts of a micro-batch: records -> accepted events and dead letters -> offsets.

Apart from ``streaming.consumer``'s loop so that the loop (threads, retries, commits) and
what it computes per batch can be read and tested separately.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from learn_core.events import Event
from streaming.dead_letter import DeadLetter, SourceRef, make_dead_letter
from streaming.validate import Limits, Rejection, decode_fast


class Accepted(NamedTuple):
    """A valid event with where it came from (and its bytes, should it be dead-lettered).

    A tuple, not a frozen dataclass: one is built per record on the polling thread, and
    a frozen dataclass's ``__init__`` costs twice as much.
    """

    event: Event
    source: SourceRef
    key: bytes | None = None
    value: bytes | None = None


@dataclass
class LoopStats:
    batches: int = 0
    records: int = 0
    accepted: int = 0
    dead_lettered: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)


def split_records(
    records: Iterable[Any], limits: Limits, expect: str | None, now: datetime | None = None
) -> tuple[list[Accepted], list[DeadLetter]]:
    """Pure: kafka-python ``ConsumerRecord``-like objects -> accepted events and dead letters."""
    good: list[Accepted] = []
    bad: list[DeadLetter] = []
    now = now or datetime.now(UTC)
    for r in records:
        src = SourceRef(r.topic, r.partition, r.offset, r.timestamp)
        out = decode_fast(r.value, limits=limits, now=now, expect=expect)
        if isinstance(out, Rejection):
            bad.append(make_dead_letter(r.key, r.value, src, out))
        else:
            good.append(Accepted(out, src, r.key, r.value))
    return good, bad


#: A handler writes the batch; it may refuse some valid events on state it alone knows
#: (a reused event id): those are returned with their reason and dead-lettered.
Handler = Callable[[list[Accepted]], list[tuple[Accepted, Rejection]] | None]


def next_offsets(records: Iterable[Any]) -> dict[Any, int]:
    """Offsets to commit after ``records``: per partition, the last offset + 1."""
    from kafka.structs import TopicPartition

    out: dict[Any, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        if r.offset + 1 > out.get(tp, -1):
            out[tp] = r.offset + 1
    return out


def polled_offsets(polled: dict[Any, list[Any]]) -> dict[Any, int]:
    """``next_offsets`` of a ``poll()`` result, from each partition's last record.

    kafka-python returns each partition's records in offset order, so this reads one
    record per partition instead of building a ``TopicPartition`` per record (that loop
    was ~13 % of the polling thread's time).
    """
    return {tp: batch[-1].offset + 1 for tp, batch in polled.items() if batch}
