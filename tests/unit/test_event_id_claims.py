"""A reused event_id (issue 11, point 5): first write wins, offline log and history agree."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learn_core.events import Interaction
from learn_core.history import windows_from_log
from learn_core.models.towers import TowerConfig
from learn_core.serving import FixedTowers, bootstrap_tower
from streaming.consumer import Accepted
from streaming.dead_letter import SourceRef
from streaming.interaction_consumer import InteractionConsumerSettings, InteractionHandler
from streaming.user_sinks import (
    ContentLookup,
    MemoryHistoryStore,
    MemoryUserSink,
    SqliteHistoryStore,
)
from streaming.validate import DUPLICATE_CONFLICT

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CFG = TowerConfig(content_dim=16, d_model=16, n_heads=2, n_layers=1, max_len=16, out_dim=8)
H = 6


def ev(event_id: str, user: str = "u1", item: str = "i1", dt: int = 0, **kw: object) -> Accepted:
    e = Interaction(
        event_id=event_id,
        user_id=user,
        item_id=item,
        event_type=kw.pop("kind", "click"),  # type: ignore[arg-type]
        occurred_at=T0 + timedelta(seconds=dt),
        **kw,  # type: ignore[arg-type]
    )
    return Accepted(e, SourceRef("t", 0, 0, None), user.encode(), e.model_dump_json().encode())


def handler(store, sink: MemoryUserSink) -> InteractionHandler:  # noqa: ANN001
    s = InteractionConsumerSettings(history_len=H, reload_check_s=0)
    return InteractionHandler(
        FixedTowers(bootstrap_tower(CFG)),
        store,
        ContentLookup(sink.read_content, 100, CFG.content_dim),
        sink,
        s,
    )


def content() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"i{k}": rng.standard_normal(CFG.content_dim).astype(np.float32) for k in range(4)}


def logged(sink: MemoryUserSink) -> pd.DataFrame:
    """The offline log as a reader sees it (one row per key, first write wins)."""
    df = pd.concat(sink.offline_interactions, ignore_index=True)
    return df.drop_duplicates(["event_id", "event_timestamp"], keep="first")


def test_first_write_wins_and_the_log_agrees_with_the_history() -> None:
    sink, store = MemoryUserSink(content()), MemoryHistoryStore()
    h = handler(store, sink)
    assert h([ev("e1"), ev("e2", dt=5)]) == []
    conflicts = [
        ev("e1", item="i2"),  # other item
        ev("e1", dt=1),  # other time
        ev("e1", user="u2"),  # other user
        ev("e1", kind="like"),  # other kind
        ev("e1", kind="rating", value=3.0),
    ]
    refused = h([ev("e1"), *conflicts, ev("e3", dt=9)])  # an identical redelivery, too
    assert [a for a, _ in refused] == conflicts
    assert {why.reason for _, why in refused} == {DUPLICATE_CONFLICT}
    assert all("e1" in why.detail for _, why in refused)

    log = logged(sink)
    assert sorted(log["event_id"]) == ["e1", "e2", "e3"]  # one row per event id
    assert log.set_index("event_id").loc["e1", "item_id"] == "i1"
    stored = store.get_many(["u1", "u2"])
    assert set(stored) == {"u1"}  # the reused id did not create a history for u2
    assert [e.event_id for e in stored["u1"].entries] == ["e1", "e2", "e3"]
    assert stored["u1"].item_ids == ["i1", "i1", "i1"]
    # the batch reference path over the offline log rebuilds the same window
    assert windows_from_log(log, H)["u1"].entries == stored["u1"].entries


def test_conflict_inside_one_batch_keeps_the_earlier_record() -> None:
    sink, store = MemoryUserSink(content()), MemoryHistoryStore()
    first, second = ev("e1", item="i2"), ev("e1", item="i3")
    refused = handler(store, sink)([first, second])
    assert [a for a, _ in refused] == [second]
    assert list(logged(sink)["item_id"]) == ["i2"]


def test_retried_batch_classifies_the_same(tmp_path: Path) -> None:
    """Claims are durable before the writes: a retried or replayed batch keeps its verdicts."""
    sink = MemoryUserSink(content())
    store = SqliteHistoryStore(tmp_path / "h.sqlite")
    batch = [ev("e1"), ev("e1", item="i2")]
    sink.fail_writes = True
    try:
        handler(store, sink)(batch)
    except ConnectionError:
        pass
    sink.fail_writes = False
    refused = handler(store, sink)(batch)
    assert [a for a, _ in refused] == [batch[1]]
    store.close()
    reopened = SqliteHistoryStore(tmp_path / "h.sqlite")
    refused = handler(reopened, sink)([ev("e1", item="i3"), ev("e1")])
    assert [a.event.item_id for a, _ in refused] == ["i3"]
    reopened.close()


def test_sqlite_claims_are_first_write_wins_across_connections(tmp_path: Path) -> None:
    a, b = SqliteHistoryStore(tmp_path / "h.sqlite"), SqliteHistoryStore(tmp_path / "h.sqlite")
    assert a.claim_events({"e1": "fa", "e2": "fa"}) == {"e1": "fa", "e2": "fa"}
    assert b.claim_events({"e1": "fb", "e3": "fb"}) == {"e1": "fa", "e3": "fb"}
    assert a.claim_events({}) == {}
    a.close()
    b.close()


def test_fingerprint_tells_content_apart_and_ignores_the_time_zone() -> None:
    from learn_core.events import event_fingerprint

    def fp(**kw: object) -> str:
        return event_fingerprint(ev("e1", **kw).event)  # type: ignore[arg-type]

    base = fp()
    same_instant = Interaction.model_validate_json(
        b'{"type":"interaction","event_id":"e1","user_id":"u1","item_id":"i1",'
        b'"event_type":"click","occurred_at":"2024-01-01T02:00:00+02:00"}'
    )
    assert event_fingerprint(same_instant) == base
    ancient = Interaction(
        event_id="e", user_id="u", item_id="i", event_type="view",
        occurred_at=datetime(1, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    later = ancient.model_copy(
        update={"occurred_at": ancient.occurred_at + timedelta(microseconds=1)}
    )
    assert event_fingerprint(ancient) != event_fingerprint(later)  # exact, even far from 1970
    others = [fp(item="i2"), fp(user="u2"), fp(dt=1), fp(kind="like"), fp(value=0.0)]
    assert len({base, *others}) == 6


# ------------------------------------------------------------ retention (bounded claims)

DAY = 86_400.0


class FakeClock:
    """Starts at the real time: a store's first generation starts at its opening."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def test_a_reuse_is_refused_within_the_retention_and_new_after_it(tmp_path: Path) -> None:
    """Through the handler and the durable store: the setting decides the span."""
    sink, store = MemoryUserSink(content()), SqliteHistoryStore(tmp_path / "h.sqlite")
    clock = FakeClock()
    store.events.clock = clock
    s = InteractionConsumerSettings(history_len=H, reload_check_s=0, event_id_retention_days=2)
    h = InteractionHandler(
        FixedTowers(bootstrap_tower(CFG)), store, ContentLookup(sink.read_content, 100, 16), sink, s
    )
    assert h([ev("e1")]) == []
    clock.t += 2 * DAY - 1  # just inside the span: exact
    refused = h([ev("e1", item="i2"), ev("e1")])
    assert [a.event.item_id for a, _ in refused] == ["i2"]
    clock.t += 2 * DAY + 2  # twice the span: dropped on every backend
    assert h([ev("e1", item="i3")]) == []
    assert h([ev("e1", item="i1")])[0][1].reason == DUPLICATE_CONFLICT  # i3 is first now
    store.close()


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_claims_are_kept_the_retention_and_stay_bounded(backend: str, tmp_path: Path) -> None:
    store = MemoryHistoryStore() if backend == "memory" else SqliteHistoryStore(tmp_path / "h")
    clock = FakeClock()
    store.events.clock = clock
    sizes = []
    for day in range(40):  # 100 new ids a day, kept 7 days
        ids = {f"d{day}-{n}": "fp" for n in range(100)}
        assert store.claim_events(ids, 7 * DAY) == ids
        sizes.append(len(store.events))
        for back in range(7):  # every claim of the last 7 days still holds
            if day >= back:
                assert store.claim_events({f"d{day - back}-0": "x"}, 7 * DAY) == {
                    f"d{day - back}-0": "fp"
                }
        clock.t += DAY
    # Memory drops each claim after exactly 7 days; SQLite drops a generation whole
    # once all of it is older than 7 days, so it holds up to 14 days of claims.
    assert max(sizes) == (800 if backend == "memory" else 1400)
    assert store.claim_events({"d25-0": "x"}, 7 * DAY) == {"d25-0": "x"}  # 15 days old
    store.close()


def test_sqlite_claims_of_an_earlier_version_are_kept_for_the_retention(tmp_path: Path) -> None:
    """The table of an earlier version is the current generation, started at the upgrade."""
    path = tmp_path / "h.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE event_ids (event_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL) "
        "WITHOUT ROWID"
    )
    old.execute("INSERT INTO event_ids VALUES ('e1', 'fa')")
    old.commit()
    old.close()
    store = SqliteHistoryStore(path)
    clock = FakeClock()
    store.events.clock = clock
    clock.t += DAY - 5
    assert store.claim_events({"e1": "fb"}, DAY) == {"e1": "fa"}  # still first
    clock.t += DAY + 10  # over twice the retention since the upgrade
    assert store.claim_events({"e1": "fb"}, DAY) == {"e1": "fb"}
    store.close()
