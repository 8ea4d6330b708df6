"""A store that went back is detected and rebuilt from the offline log (issue 25, item 1).

The pure check (``streaming.high_water``) with a fake clock, the marks of the history
stores, and the handler on in-memory ports: a store rolled back to an older snapshot is
found by the next batch or by the periodic check, marked ``degraded`` while its users are
rebuilt, and ends equal to the batch reference (windows and embeddings).
"""

from __future__ import annotations

import copy
import urllib.request
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from feature_repo.store_status import Degraded, MemoryStoreStatus, SqliteStoreStatus, partition_of
from learn_core.history import windows_from_log
from learn_core.inference import recompute_users
from streaming.consumer import Accepted
from streaming.high_water import Regression, Watch, record_spans, regressions
from streaming.history_store import MemoryHistoryStore, SqliteHistoryStore
from streaming.metrics import MetricsSettings, StreamMetrics
from streaming.user_sinks import MemoryUserSink
from tests.unit.test_interaction_handler import H, _accepted, _content, _handler, _log

Rec = namedtuple("Rec", "partition offset")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------------------------ pure


def test_record_spans_cover_every_record_of_each_partition() -> None:
    recs = [Rec(0, 5), Rec(1, 9), Rec(0, 6), Rec(0, 7), Rec(1, 10)]
    assert record_spans(recs) == {0: (5, 8), 1: (9, 11)}
    assert record_spans([]) == {}


def test_regressions_only_below_the_floor() -> None:
    floors = {0: 10, 1: 10, 2: 10, 3: 0, 4: 7}
    stored = {0: 10, 1: 12, 2: 9, 3: None, 4: None}
    assert regressions(stored, floors) == [Regression(2, 9, 10), Regression(4, None, 7)]
    assert "partition 2" in Regression(2, 9, 10).reason("learn.interactions")
    assert "committed offset 10" in Regression(2, 9, 10).reason("t")


def test_watch_floors_follow_batches_and_catch_a_mark_that_went_back() -> None:
    clock = Clock()
    w = Watch(5.0, clock)
    # First batch of a partition: its first offset is what the group committed.
    assert w.after_batch({0: None}, {0: (0, 10)}) == []
    assert w.after_batch({0: 10}, {0: (10, 20)}) == []
    assert w.floors == {0: 20}
    # A redelivery after a crash between the stamp and the commit: marks ahead are fine.
    assert w.after_batch({0: 20}, {0: (15, 20)}) == []
    # The store went back to an older mark: the next batch's transaction reveals it.
    assert w.after_batch({0: 10}, {0: (20, 25)}) == [Regression(0, 10, 20)]
    # A new partition whose store has no mark although the group committed past 0.
    assert w.after_batch({1: None}, {1: (40, 41)}) == [Regression(1, None, 40)]


def test_watch_periodic_check_uses_the_injected_clock() -> None:
    clock = Clock()
    w = Watch(5.0, clock)
    w.start({0: 30, 1: 0})
    assert w.due()
    assert w.check({0: 30, 1: None}, {0, 1}) == []
    assert not w.due()
    clock.t = 4.9
    assert not w.due()
    clock.t = 5.0
    assert w.due()
    assert w.check({0: 12, 1: None}, {0, 1, 2}) == [Regression(0, 12, 30)]
    w.repaired({0}, {0: 30})
    assert w.check({0: 30}, {0}) == []


# --------------------------------------------------------------------- marks in stores


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_history_store_returns_the_marks_it_replaced(kind: str, tmp_path: Path) -> None:
    store = MemoryHistoryStore() if kind == "memory" else SqliteHistoryStore(tmp_path / "h.db")
    try:
        assert store.apply({}, [], {0: 10, 3: 4}) == {0: None, 3: None}
        assert store.apply({}, [], {0: 25}) == {0: 10}
        assert store.high_water([0, 1, 3]) == {0: 25, 1: None, 3: 4}
        assert store.apply({}, []) == {}
    finally:
        store.close()


def test_status_marks_round_trip(tmp_path: Path) -> None:
    d = Degraded("learn.interactions", 2, 4, "went back", 1_700_000_000.0)
    for status in (MemoryStoreStatus(), SqliteStoreStatus(tmp_path / "s.sqlite")):
        status.mark([d])
        assert status.degraded() == [d]
        status.clear([d.scope, "learn.interactions/3"])
        assert status.degraded() == []
        status.close()
    users = [f"u{k:03d}" for k in range(300)]
    assert {partition_of(u, 4) for u in users} == {0, 1, 2, 3}
    assert sum(d.affects(u) for u in users) == sum(partition_of(u, 4) == 2 for u in users)


def test_partition_of_is_kafkas_default_partitioner() -> None:
    """The reader places users without a Kafka client: the same murmur2 as kafka-python's."""
    import random

    from kafka.partitioner.default import murmur2 as kafka_murmur2

    from feature_repo.store_status import murmur2

    rng = random.Random(0)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(40) for _ in range(25)]
    keys += [f"u{k:03d}".encode() for k in range(300)] + ["ü-ß-用户".encode()]
    assert [murmur2(k) for k in keys] == [kafka_murmur2(k) for k in keys]
    assert {partition_of(f"u{k:03d}", 8) for k in range(300)} == set(range(8))


# ------------------------------------------------------------------------- handler


def _numbered(acc: list[Accepted]) -> list[Accepted]:
    """The events with offsets numbered from 0 within each partition, as Kafka numbers them."""
    nxt: dict[int, int] = {}
    out = []
    for a in acc:
        off = nxt.get(a.source.partition, 0)
        nxt[a.source.partition] = off + 1
        out.append(a._replace(source=a.source._replace(offset=off)))
    return out


def _batches(handler, acc, cuts):  # noqa: ANN001, ANN202
    """Run ``acc`` in batches, each announced with its offsets as the loop does."""
    bounds = [0, *cuts, len(acc)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        part = acc[a:b]
        handler.begin_batch(record_spans(Rec(x.source.partition, x.source.offset) for x in part))
        handler(part)


class RecordingSink(MemoryUserSink):
    """Notes the ``degraded`` marks present while user rows are written."""

    def __init__(self, *a, **kw) -> None:  # noqa: ANN002, ANN003
        super().__init__(*a, **kw)
        self.marks_while_writing: list[set[str]] = []

    def write_users_online(self, rows) -> None:  # noqa: ANN001
        self.marks_while_writing.append({d.scope for d in self.status.degraded()})
        super().write_users_online(rows)


def _snapshot(store: MemoryHistoryStore, sink: MemoryUserSink) -> dict:
    return copy.deepcopy({"store": store.__dict__, "online": sink.online})


def _restore(snap: dict, store: MemoryHistoryStore, sink: MemoryUserSink) -> None:
    """The online store restarted from ``snap``: windows, marks, claims and rows go back."""
    store.__dict__.update(copy.deepcopy(snap["store"]))
    sink.online = copy.deepcopy(snap["online"])


def _check_against_log(handler, sink: MemoryUserSink, store: MemoryHistoryStore) -> None:  # noqa: ANN001
    log = _log(sink)
    want = windows_from_log(log, H)
    assert {u: w.entries for u, w in store.rows.items()} == {u: w.entries for u, w in want.items()}
    ref = recompute_users(log, sink.content, handler.model.tower, H)
    assert set(ref) == set(sink.online)
    for user, (vec, _, t_ms) in ref.items():
        np.testing.assert_allclose(sink.online[user]["embedding"], vec, atol=1e-5, rtol=0)
        assert sink.online[user]["event_timestamp"].value // 1_000_000 == t_ms


def test_next_batch_finds_a_store_that_went_back_and_rebuilds_it() -> None:
    sink = RecordingSink(_content(12))
    store = MemoryHistoryStore()
    handler = _handler(sink, store)
    handler.repair.configure("t", 2)
    acc = _numbered(_accepted(203))
    _batches(handler, acc[:100], [50])
    snap = _snapshot(store, sink)
    _batches(handler, acc[100:200], [150])
    assert handler.repair.rebuilds == 0
    _restore(snap, store, sink)  # 100 committed events are gone from the windows
    lost = {u: w for u, w in store.rows.items() if w != windows_from_log(_log(sink), H).get(u)}
    assert lost
    sink.marks_while_writing.clear()
    _batches(handler, acc[200:203], [])  # a small batch: it refreshes few windows itself
    assert handler.repair.rebuilds == 1 and handler.repair.rebuilt_users > 0
    # The batch's own partition, rebuilt while it was marked degraded; the other one waits
    # for the periodic check (not due yet), which finds it as well.
    assert {"t/0"} in sink.marks_while_writing
    assert sink.status.degraded() == []
    handler.repair.watch.last_check = float("-inf")
    handler([])
    assert handler.repair.rebuilds == 2
    assert {"t/1"} in sink.marks_while_writing
    assert sink.status.degraded() == []
    assert store.high_water([0, 1]) == {p: handler.repair.watch.floors[p] for p in (0, 1)}
    _check_against_log(handler, sink, store)


def test_periodic_check_finds_it_on_a_quiet_topic() -> None:
    sink = MemoryUserSink(_content(12))
    store = MemoryHistoryStore()
    clock = Clock()
    metrics = StreamMetrics(MetricsSettings(enabled=True, port=0))
    handler = _handler(sink, store, metrics=metrics)
    handler.repair.watch.clock = clock
    handler.repair.configure("t", 2)
    acc = _numbered(_accepted(200))
    _batches(handler, acc[:120], [60])
    snap = _snapshot(store, sink)
    _batches(handler, acc[120:], [])
    _restore(snap, store, sink)
    clock.t += handler.s.store_check_s / 2
    handler([])  # idle, not due yet: nothing noticed
    assert handler.repair.rebuilds == 0
    clock.t += handler.s.store_check_s
    handler([])
    assert handler.repair.rebuilds == 1
    _check_against_log(handler, sink, store)
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=5).read()
    assert b'learnrec_store_rebuilds_total{consumer="interactions"} 2.0' in body
    assert (
        f'learnrec_store_rebuilt_users_total{{consumer="interactions"}} {handler.repair.rebuilt_users}.0'.encode()
        in body
    )
    handler([])  # the marks are back: no second rebuild
    clock.t += handler.s.store_check_s
    handler([])
    assert handler.repair.rebuilds == 1


def test_start_up_check_against_committed_offsets() -> None:
    sink = MemoryUserSink(_content(12))
    store = MemoryHistoryStore()
    first = _handler(sink, store)
    first.repair.configure("t", 2)
    acc = _numbered(_accepted(160))
    _batches(first, acc[:80], [])
    snap = _snapshot(store, sink)
    _batches(first, acc[80:], [])
    committed = dict(first.repair.watch.floors)
    _restore(snap, store, sink)  # went back while no consumer ran
    second = _handler(sink, store)
    second.reload_model(force=True)
    second.repair.start(second, "t", committed)
    assert second.repair.rebuilds == 1
    _check_against_log(second, sink, store)
    # An old snapshot's leftover mark is cleared by the owner's next check.
    sink.status.mark([Degraded("t", 0, 2, "old", 0.0)])
    second.repair.start(second, "t", committed)
    assert sink.status.degraded() == [] and second.repair.rebuilds == 1


def test_a_batch_of_dead_letters_still_stamps_its_offsets() -> None:
    sink = MemoryUserSink(_content(12))
    store = MemoryHistoryStore()
    handler = _handler(sink, store)
    handler.begin_batch({0: (0, 7)})
    handler([])  # every record of the batch was dead-lettered
    assert store.high_water([0]) == {0: 7}
    _batches(handler, [a for a in _numbered(_accepted(40)) if a.source.partition == 0], [])
    assert handler.repair.rebuilds == 0


def test_a_lost_row_under_a_right_window_is_rewritten() -> None:
    """Windows intact, a row gone (a backfill written after the snapshot, say): rewritten."""
    sink = MemoryUserSink(_content(12))
    store = MemoryHistoryStore()
    handler = _handler(sink, store)
    handler.repair.configure("t", 2)
    _batches(handler, _numbered(_accepted(120)), [])
    lost = sorted(sink.online)[0]
    del sink.online[lost]
    store.marks = {p: 0 for p in store.marks}  # the marks went back, the windows did not
    handler.repair.watch.last_check = float("-inf")
    handler([])
    assert handler.repair.rebuilds == 1 and handler.repair.rebuilt_users == 1
    _check_against_log(handler, sink, store)
