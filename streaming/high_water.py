"""Has the online store gone back? The pure core of the interaction consumer's check.

Every batch's state transaction also stamps, per partition, the offset after the batch's
last record (its *high-water mark*), beside the windows, in the same backend and the same
transaction (``HistoryStore.apply``). The consumer commits those offsets only after that,
so a store that keeps what it acknowledged always holds a mark at or above every offset
the group committed. A store that has gone back (Redis restarted from an older
``dump.rdb``, a failover to a lagging replica) holds older marks along with its older
windows: the mark it returns is below what the consumer knows was written. That is the
test, on three occasions:

* each batch: the transaction returns the marks it replaced; each must be at least the
  consumer's *floor* for the partition (what it stamped itself, else the batch's first
  offset, which the group committed). Atomic with the write, so a store that goes back
  between two batches cannot hide behind the next stamp;
* at start-up: the marks against the group's committed offsets;
* periodically (``store_check_s``), on quiet partitions too: the marks against the floors.

A mark that is missing while the floor is above 0 counts as gone back: a Redis that came
back empty, and, once, a store written before these marks existed (its users are rebuilt
from the offline log, which is correct, only slower). No Kafka, Redis or Feast here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Any

#: partition -> (offset of the batch's first record, offset after its last record)
Spans = dict[int, tuple[int, int]]


def record_spans(records: Iterable[Any]) -> Spans:
    """The offsets a batch of ``ConsumerRecord``s covers, per partition (invalid ones too:
    the loop commits past dead letters, so the stamp must as well).

    Each partition's records come in offset order (Kafka's, kept by the loop), in runs: one
    look at each run's ends, not a comparison per record (which cost ~2 % of the consumer).
    """
    out: Spans = {}
    for p, group in groupby(records, attrgetter("partition")):
        run = list(group)
        first, nxt = run[0].offset, run[-1].offset + 1
        if p in out:
            first, nxt = min(first, out[p][0]), max(nxt, out[p][1])
        out[p] = (first, nxt)
    return out


@dataclass(frozen=True)
class Regression:
    """A partition whose stored mark is below what is known to have been written."""

    partition: int
    #: the store's mark (None: no mark at all)
    stored: int | None
    #: the offset up to which the consumer knows its writes were acknowledged
    expected: int

    def reason(self, topic: str) -> str:
        held = "no high-water mark" if self.stored is None else f"writes up to offset {self.stored}"
        return (
            f"online store went back on {topic} partition {self.partition}: it holds {held}, "
            f"the consumer group had committed offset {self.expected}"
        )


def regressions(stored: Mapping[int, int | None], floors: Mapping[int, int]) -> list[Regression]:
    """The partitions of ``floors`` whose ``stored`` mark is below their floor."""
    out = []
    for p, floor in sorted(floors.items()):
        mark = stored.get(p)
        if (mark is None and floor > 0) or (mark is not None and mark < floor):
            out.append(Regression(p, mark, floor))
    return out


@dataclass
class Watch:
    """The floors one consumer holds, and when it checks next (clock injected)."""

    check_every_s: float
    clock: Callable[[], float]
    #: partition -> offset up to which this consumer knows the store acknowledged writes
    floors: dict[int, int] = field(default_factory=dict)
    last_check: float = float("-inf")

    def batch_floors(self, spans: Spans) -> dict[int, int]:
        """The floors a batch's replaced marks must reach: a partition seen before keeps its
        floor (what this consumer stamped or found committed); a new one (a rebalance)
        starts at the batch's first offset, where the group's committed offset put it."""
        return {p: self.floors.get(p, first) for p, (first, _) in spans.items()}

    @staticmethod
    def stamps(spans: Spans) -> dict[int, int]:
        """The marks a batch writes: the offset after its last record, per partition."""
        return {p: nxt for p, (_, nxt) in spans.items()}

    def after_batch(self, replaced: Mapping[int, int | None], spans: Spans) -> list[Regression]:
        """Record a batch's stamps; return the partitions whose replaced mark was too old."""
        found = regressions(replaced, self.batch_floors(spans))
        for p, (_, nxt) in spans.items():
            self.floors[p] = max(self.floors.get(p, 0), nxt)
        return found

    def start(self, committed: Mapping[int, int]) -> None:
        """Floors from the group's committed offsets (start-up or a new assignment)."""
        for p, off in committed.items():
            self.floors[p] = max(self.floors.get(p, 0), off)

    def due(self) -> bool:
        return self.clock() - self.last_check >= self.check_every_s

    def check(self, stored: Mapping[int, int | None], owned: Iterable[int]) -> list[Regression]:
        """The periodic check of the owned partitions this consumer has floors for."""
        self.last_check = self.clock()
        return regressions(stored, {p: self.floors[p] for p in owned if p in self.floors})

    def repaired(self, partitions: Iterable[int], stamped: Mapping[int, int]) -> None:
        """The store holds ``stamped`` again after a rebuild (floors unchanged otherwise)."""
        for p in partitions:
            self.floors[p] = max(self.floors.get(p, 0), stamped.get(p, 0))
