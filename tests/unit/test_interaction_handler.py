"""The interaction handler with in-memory ports: consistency, late items, retries, reload."""

from __future__ import annotations

import random
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learn_core.events import Interaction
from learn_core.history import BatchPlan, Entry, UserHistory
from learn_core.inference import recompute_users
from learn_core.models.towers import TowerConfig
from learn_core.serving import FixedTowers, LoadedTower, bootstrap_tower
from streaming.consumer import Accepted
from streaming.dead_letter import SourceRef
from streaming.interaction_consumer import (
    InteractionConsumerSettings,
    InteractionHandler,
)
from streaming.metrics import MetricsSettings, StreamMetrics
from streaming.user_rows import interaction_rows, user_rows
from streaming.user_sinks import (
    ContentLookup,
    MemoryHistoryStore,
    MemoryUserSink,
    SqliteHistoryStore,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CFG = TowerConfig(content_dim=16, d_model=16, n_heads=2, n_layers=1, max_len=16, out_dim=8)
H = 6


def _content(n_items: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n_items, CFG.content_dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return {f"i{k}": v[k] for k in range(n_items)}


def _accepted(n: int, users: int = 8, items: int = 12, seed: int = 0) -> list[Accepted]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        ev = Interaction(
            event_id=f"e{k:05d}",
            user_id=f"u{rng.randrange(users)}",
            item_id=f"i{rng.randrange(items)}",
            event_type="click",
            occurred_at=T0 + timedelta(seconds=k),
        )
        out.append(Accepted(ev, SourceRef("t", int(ev.user_id[1:]) % 2, k, 1_700_000_000_000 + k)))
    return out


def _handler(sink: MemoryUserSink, store=None, towers=None, **kw) -> InteractionHandler:  # noqa: ANN001
    s = InteractionConsumerSettings(history_len=H, reload_check_s=0)
    towers = towers or FixedTowers(bootstrap_tower(CFG))
    return InteractionHandler(
        towers,
        store or MemoryHistoryStore(),
        ContentLookup(sink.read_content, 1000, CFG.content_dim),
        sink,
        s,
        **kw,
    )


def _log(sink: MemoryUserSink) -> pd.DataFrame:
    return pd.concat(sink.offline_interactions, ignore_index=True)


def _run(handler: InteractionHandler, acc: list[Accepted], cuts: list[int]) -> None:
    bounds = [0, *cuts, len(acc)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        handler(acc[a:b])


def test_streaming_equals_batch_recomputation() -> None:
    sink = MemoryUserSink(_content(12))
    handler = _handler(sink)
    acc = _accepted(300)
    _run(handler, acc, [1, 2, 50, 51, 190])
    model = handler.model
    assert model is not None
    ref = recompute_users(_log(sink), sink.content, model.tower, H)
    assert set(ref) == set(sink.online)
    for user, (vec, n, t_ms) in ref.items():
        row = sink.online[user]
        np.testing.assert_allclose(row["embedding"], vec, atol=1e-5, rtol=0)
        assert row["history_len"] == n == H
        assert row["model_version"] == model.version
        assert pd.Timestamp(row["event_timestamp"]).value // 1_000_000 == t_ms
    assert np.isclose(np.linalg.norm(next(iter(ref.values()))[0]), 1.0, atol=1e-5)


def test_replay_writes_nothing_new_and_same_features() -> None:
    sink = MemoryUserSink(_content(12))
    handler = _handler(sink)
    acc = _accepted(120)
    _run(handler, acc, [60])
    before = {u: r["embedding"].copy() for u, r in sink.online.items()}
    written = handler.stats.users_written
    _run(handler, acc, [30, 90])  # a crash after the state write re-delivers everything
    assert handler.stats.users_written == written
    assert {u: r["embedding"].tolist() for u, r in sink.online.items()} == {
        u: v.tolist() for u, v in before.items()
    }


def test_late_item_is_held_then_released() -> None:
    content = _content(12)
    late = content.pop("i3")
    sink = MemoryUserSink(content)
    store = MemoryHistoryStore()
    handler = _handler(sink, store)
    acc = _accepted(80)
    handler(acc)
    held = set(store.held_users)
    assert held and handler.stats.held_interactions >= len(held)
    assert not held & set(sink.online)
    assert all("i3" in store.rows[u].item_ids for u in held)
    # A batch without the item keeps them held; the content lookup asks again each time.
    handler([])
    assert set(store.held_users) == held
    sink.content["i3"] = late
    handler([])
    assert not store.held_users and handler.stats.released_users == len(held)
    ref = recompute_users(_log(sink), sink.content, handler.model.tower, H)  # type: ignore[union-attr]
    for u in held:
        np.testing.assert_allclose(sink.online[u]["embedding"], ref[u][0], atol=1e-5, rtol=0)


def test_failed_write_leaves_state_for_retry() -> None:
    sink = MemoryUserSink(_content(12))
    store = MemoryHistoryStore()
    handler = _handler(sink, store)
    acc = _accepted(40)
    sink.fail_writes = True
    with pytest.raises(ConnectionError):
        handler(acc)
    assert store.rows == {} and sink.online == {}  # no state: the retry recomputes all
    sink.fail_writes = False
    handler(acc)  # the loop's retry
    assert set(store.rows) == set(sink.online)
    clean = MemoryUserSink(_content(12))
    _handler(clean)(acc)
    assert {u: r["embedding"].tolist() for u, r in sink.online.items()} == {
        u: r["embedding"].tolist() for u, r in clean.online.items()
    }


def test_hot_reload_switches_at_batch_boundary() -> None:
    a = bootstrap_tower(CFG, seed=0)
    b = bootstrap_tower(CFG, seed=1)
    assert a.version != b.version
    towers = FixedTowers(a, b)
    sink = MemoryUserSink(_content(12))
    handler = _handler(sink, towers=towers)
    acc = _accepted(100)
    handler(acc[:50])
    assert {r["model_version"] for r in sink.online.values()} == {a.version}
    towers.version = b.version
    handler(acc[50:])
    new = [r for r in sink.online.values() if r["model_version"] == b.version]
    assert new and handler.stats.model_switches == 1
    ref = recompute_users(_log(sink), sink.content, b.tower, H)
    for r in new:
        np.testing.assert_allclose(r["embedding"], ref[r["user_id"]][0], atol=1e-5, rtol=0)


def test_bootstrap_tower_is_deterministic() -> None:
    one, two = bootstrap_tower(CFG), bootstrap_tower(CFG)
    assert one.version == two.version and one.version.startswith("bootstrap-")
    assert isinstance(one, LoadedTower)


def test_content_lookup_caches_hits_only() -> None:
    calls: list[list[str]] = []
    data = _content(3)

    def fetch(ids: list[str]) -> dict[str, np.ndarray]:
        calls.append(ids)
        return {i: data[i] for i in ids if i in data}

    lru = ContentLookup(fetch, max_entries=2, dim=CFG.content_dim)
    assert set(lru.get_many(["i0", "i1", "zz"])) == {"i0", "i1"}
    assert set(lru.get_many(["i0", "zz"])) == {"i0"}
    assert calls[-1] == ["zz"]  # the miss is asked again, the hit is not
    lru.get_many(["i2"])  # evicts the least recently used (i1)
    lru.get_many(["i1"])
    assert calls[-1] == ["i1"]


def test_sqlite_history_store_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    store = SqliteHistoryStore(path)
    h1 = UserHistory((Entry(1, "e1", "i1"),), partition=0)
    h2 = UserHistory((Entry(2, "e2", "i2"),), partition=1)
    store.apply({"u1": h1, "u2": h2}, held=["u2"])
    store.close()
    store = SqliteHistoryStore(path)  # durable across a restart
    assert store.get_many(["u1", "u2", "nobody"]) == {"u1": h1, "u2": h2}
    assert store.held({1}) == {"u2": h2} and store.held({0}) == {}
    store.apply({"u2": h2}, held=[])
    assert store.held(None) == {}
    store.close()


def test_metrics_endpoint_when_enabled() -> None:
    m = StreamMetrics(MetricsSettings(enabled=True, port=0))
    m.record_batch(10, 2, 0.05)
    m.record_write(0.01, [0.2, 0.3])
    m.record_held(4, 1)
    m.record_lag(7)
    body = urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=5).read().decode()
    for name in (
        "learnrec_events_total",
        "learnrec_events_per_second",
        "learnrec_consumer_lag",
        "learnrec_batch_seconds_bucket",
        "learnrec_write_seconds_bucket",
        "learnrec_freshness_seconds_bucket",
        "learnrec_dead_letters_total",
        "learnrec_held_interactions",
    ):
        assert name in body, name
    assert 'learnrec_dead_letters_total{consumer="interactions"} 2.0' in body


def test_metrics_off_by_default() -> None:
    m = StreamMetrics(MetricsSettings())
    assert not m.enabled and m.port is None
    m.record_batch(1, 0, 0.1)  # no-op


def test_interaction_rows_equal_the_datetime_reference() -> None:
    """The integer-microsecond path equals converting the ``datetime`` objects."""
    from datetime import timezone

    tz = timezone(timedelta(hours=5, minutes=30))
    events = [
        Interaction(
            event_id=f"e{k}",
            user_id="u",
            item_id="i",
            event_type="rating" if k % 2 else "view",
            value=float(k) if k % 2 else None,
            occurred_at=(T0 + timedelta(microseconds=123_457 * k, days=400 * k)).astimezone(tz),
        )
        for k in range(7)
    ]
    created = pd.Timestamp(datetime.now(UTC))
    reference = pd.DataFrame(
        {
            "event_id": [e.event_id for e in events],
            "user_id": [e.user_id for e in events],
            "item_id": [e.item_id for e in events],
            "event_type": [e.event_type for e in events],
            "value": np.asarray([np.nan if e.value is None else e.value for e in events]),
            "event_timestamp": pd.to_datetime([e.occurred_at for e in events], utc=True),
            "created": created,
        }
    )
    pd.testing.assert_frame_equal(interaction_rows(events, created), reference)


def test_user_rows_carry_each_ready_users_newest_event_time() -> None:
    hist = {
        "a": UserHistory((Entry(1_000, "e1", "i1"), Entry(1_700_000_000_123, "e2", "i2"))),
        "b": UserHistory((Entry(5, "e3", "i1"),)),
        "held": UserHistory((Entry(9, "e4", "i9"),)),
    }
    plan = BatchPlan(histories=hist, ready=["b", "a"], held={"held": frozenset({"i9"})})
    vecs = np.arange(6, dtype=np.float32).reshape(2, 3)
    created = pd.Timestamp(datetime.now(UTC))
    rows = user_rows(plan, vecs, "v7", created)
    assert list(rows["user_id"]) == ["b", "a"]  # only the ready users, in plan order
    assert list(rows["history_len"]) == [1, 2]
    assert list(rows["event_timestamp"]) == [
        pd.Timestamp(5, unit="ms", tz="UTC"),
        pd.Timestamp(1_700_000_000_123, unit="ms", tz="UTC"),
    ]
    np.testing.assert_array_equal(np.stack(rows["embedding"]), vecs)
    assert set(rows["model_version"]) == {"v7"} and (rows["created"] == created).all()


def test_failed_offline_append_commits_no_state() -> None:
    class FailingLog(MemoryUserSink):
        fail = True

        def append_interactions(self, rows: pd.DataFrame) -> None:
            if self.fail:
                raise OSError("disk full (test)")
            super().append_interactions(rows)

    sink = FailingLog(_content(12))
    store = MemoryHistoryStore()
    handler = _handler(sink, store)
    acc = _accepted(40)
    with pytest.raises(OSError):
        handler(acc)
    assert store.rows == {}
    sink.fail = False
    handler(acc)
    assert set(store.rows) == set(sink.online) and len(_log(sink)) == 40


def test_vectors_of_another_content_model_are_held_not_read() -> None:
    """A tower trained on content model A never reads a vector made by model B."""
    base = bootstrap_tower(CFG)
    tower = LoadedTower("m-a", base.tower, content_model="ident-A")
    sink = MemoryUserSink(_content(12), versions={f"i{k}": "ident-A" for k in range(12)})
    sink.versions["i0"] = "ident-B"  # one item still has a vector of another model
    handler = _handler(sink, towers=FixedTowers(tower))
    acc = _accepted(200)
    handler(acc)
    from learn_core.history import windows_from_log

    wins = windows_from_log(_log(sink), H)
    with_i0 = {u for u, w in wins.items() if "i0" in w.item_ids}  # i0 still in the window
    assert with_i0 and handler.stats.held_users == len(with_i0)
    assert not with_i0 & set(sink.online)  # held: no embedding from a B vector
    assert set(sink.online) == {a.event.user_id for a in acc} - with_i0
    # Re-embedded with model A: the held users are released on the next (empty) call.
    sink.versions["i0"] = "ident-A"
    handler([])
    assert with_i0 <= set(sink.online) and handler.stats.held_users == 0
    ref = recompute_users(_log(sink), sink.content, tower.tower, H)
    for user in with_i0:
        np.testing.assert_allclose(sink.online[user]["embedding"], ref[user][0], atol=1e-5)


def test_the_models_window_is_embedded_when_the_consumer_keeps_more() -> None:
    """A model trained (and backfilled) on windows of 4 items is served windows of 4 by a
    consumer that keeps 6: its rows equal the batch recomputation at H = 4, which is what
    the retraining job's backfill writes."""
    from dataclasses import replace

    short = replace(bootstrap_tower(CFG), history_len=4)
    sink = MemoryUserSink(_content(12))
    handler = _handler(sink, towers=FixedTowers(short))
    _run(handler, _accepted(200), [70])
    ref = recompute_users(_log(sink), sink.content, short.tower, 4)
    assert set(ref) == set(sink.online)
    for user, (vec, n, _) in ref.items():
        np.testing.assert_allclose(sink.online[user]["embedding"], vec, atol=1e-5, rtol=0)
        assert sink.online[user]["history_len"] == n == 4
    six = recompute_users(_log(sink), sink.content, short.tower, H)  # the check can fail
    assert not np.allclose(sink.online["u0"]["embedding"], six["u0"][0], atol=1e-3)


def test_a_consumer_keeping_fewer_items_than_the_model_reads_is_refused() -> None:
    from dataclasses import replace

    from streaming.interaction_consumer import window_problem

    model = replace(bootstrap_tower(CFG), history_len=8)
    assert window_problem(model, 8) is None and window_problem(model, 50) is None
    why = window_problem(model, H)
    assert why is not None and "LEARNREC_INTERACTION_CONSUMER_HISTORY_LEN=6" in why
    assert "at least 8" in why
    assert model.window(H) == H and model.window(50) == 8
    assert replace(model, history_len=None).window(50) == CFG.max_len  # the tower's positions
    assert window_problem(replace(model, history_len=None), 2) is None  # no contract: no check


def test_start_up_refuses_a_window_shorter_than_the_models() -> None:
    from dataclasses import replace

    from learn_core.settings import ConfigError
    from streaming.interaction_consumer import build_interaction_loop

    model = replace(bootstrap_tower(CFG), history_len=8)
    sink = MemoryUserSink(_content(12))
    s = InteractionConsumerSettings(history_len=H)
    with pytest.raises(ConfigError, match="HISTORY_LEN=6 keeps fewer items"):
        # no broker at this address: the check comes before any connection
        build_interaction_loop(
            "127.0.0.1:9", sink, MemoryHistoryStore(), FixedTowers(model), settings=s
        )
