"""Dual write during a switch: the registry's pending pointer and the writers that follow it.

A retrain marks its candidate pending, waits longer than every consumer's pointer check,
replays the logs' tail and switches (``trainers.jobs.switch``). Here the parts:
the pointer, the read order that makes clearing it after the switch safe, and both
consumers writing the pending version's rows first, then the current one's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from learn_core.contract import ServingConfig
from learn_core.inference import encode_items, recompute_users
from learn_core.models.learn import LearnConfig, LearnModel
from learn_core.models.towers import TowerConfig
from learn_core.registry import ModelRegistry, RegistryError
from learn_core.serving import (
    FixedTowers,
    LoadedTower,
    ModelCache,
    RegistryTowers,
    VersionError,
    as_serving,
    bootstrap_tower,
)
from streaming.sinks import ItemTowerSink
from streaming.tower_versions import ServedTowers
from streaming.user_sinks import MemoryUserSink
from tests.unit.test_interaction_handler import CFG, T0, H, _accepted, _content, _handler, _log
from tests.unit.test_item_tower_sink import Content, FakeHandle, rows


def _registry(tmp_path: Path) -> tuple[ModelRegistry, str, str]:
    reg = ModelRegistry(tmp_path)
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = LearnModel(LearnConfig(TowerConfig(content_dim=16, d_model=16, max_len=8)))
        out.append(
            reg.save(model, content_model="ident-A", serving=ServingConfig(6, "window", "ident-A"))
        )
    return reg, out[0], out[1]


class Recording:
    """A registry proxy that records which pointer is read when."""

    def __init__(self, reg: ModelRegistry) -> None:
        self.reg, self.calls = reg, []

    def current_version(self) -> str | None:
        self.calls.append("current")
        return self.reg.current_version()

    def pending_version(self) -> str | None:
        self.calls.append("pending")
        return self.reg.pending_version()

    def load(self, version: str) -> Any:
        return self.reg.load(version)


def test_pending_pointer_round_trip(tmp_path: Path) -> None:
    reg, a, b = _registry(tmp_path)
    assert reg.pending_version() is None
    reg.mark_pending(b)
    assert reg.pending_version() == b and reg.current_version() is None
    reg.promote(b)
    reg.clear_pending()
    assert reg.pending_version() is None and reg.current_version() == b
    with pytest.raises(RegistryError):
        reg.mark_pending("m-no-such-version")


def test_model_cache_writes_the_pending_version_first_and_reads_it_before_current(
    tmp_path: Path,
) -> None:
    reg, a, b = _registry(tmp_path)
    reg.promote(a)
    rec = Recording(reg)
    cache = ModelCache(rec, check_s=0, follow_pending=True)  # type: ignore[arg-type]
    assert [m.version for m in cache.writing()] == [a]
    reg.mark_pending(b)
    assert [m.version for m in cache.writing()] == [b, a]
    assert cache.current().version == a  # readers still get the serving version
    reg.promote(b)
    reg.clear_pending()
    assert [m.version for m in cache.writing()] == [b]
    assert rec.calls[:2] == ["pending", "current"]  # every check: pending, then current
    assert rec.calls == ["pending", "current"] * (len(rec.calls) // 2)

    # Readers do not follow it (one pointer read per check).
    plain = Recording(reg)
    ModelCache(plain, check_s=0).current()  # type: ignore[arg-type]
    assert plain.calls == ["current"]


def test_item_tower_sink_writes_both_versions_pending_first(tmp_path: Path) -> None:
    reg, a, b = _registry(tmp_path)
    reg.promote(a)
    reg.mark_pending(b)
    handle, content = FakeHandle(), Content()
    cache = ModelCache(reg, expect_content="ident-A", follow_pending=True)
    sink = ItemTowerSink(content, handle, cache)  # type: ignore[arg-type]
    batch = rows(5)
    sink.write_item_content(batch)
    online = handle.online["item_tower_embedding"]
    assert [set(f["model_version"]) for f in online] == [{b}, {a}]
    for frame, v in zip(online, (b, a), strict=True):
        want = encode_items(as_serving(v, reg.load(v)), np.stack(batch["embedding"]))
        np.testing.assert_allclose(np.stack(frame["embedding"]), want, atol=1e-6)
    offline = handle.offline["item_tower_embedding"]
    # Each version's offline rows have their own stamp: the log's key is (item, time).
    assert offline[0]["event_timestamp"].iloc[0] != offline[1]["event_timestamp"].iloc[0]
    assert sink.written == 5


class VersionedSink(MemoryUserSink):
    """Keeps every online frame, so that rows of two versions of one user both show."""

    def __init__(self, content: dict[str, np.ndarray]) -> None:
        super().__init__(content)
        self.frames: list[pd.DataFrame] = []
        self.on_append: Any = None

    def write_users_online(self, rows: pd.DataFrame) -> None:
        self.frames.append(rows.copy())
        super().write_users_online(rows)

    def append_interactions(self, rows: pd.DataFrame) -> None:
        super().append_interactions(rows)
        if self.on_append is not None:
            self.on_append()


def _by_version(frames: list[pd.DataFrame]) -> dict[str, pd.DataFrame]:
    df = pd.concat(frames, ignore_index=True)
    return {v: g.drop_duplicates("user_id", keep="last") for v, g in df.groupby("model_version")}


def test_interaction_handler_writes_both_versions_with_the_same_stamps() -> None:
    a, b = bootstrap_tower(CFG, seed=0), bootstrap_tower(CFG, seed=1)
    towers = FixedTowers(a, b)
    towers.pending = b.version
    sink = VersionedSink(_content(12))
    handler = _handler(sink, towers=towers)
    acc = _accepted(120)
    handler(acc[:60])
    first = sink.frames[0]
    n = len(first) // 2
    # One write: the pending version's rows first, then the serving version's.
    assert set(first["model_version"].iloc[:n]) == {b.version}
    assert set(first["model_version"].iloc[n:]) == {a.version}
    handler(acc[60:])
    got = _by_version(sink.frames)
    assert set(got) == {a.version, b.version}
    for tower in (a, b):
        ref = recompute_users(_log(sink), sink.content, tower.tower, H)
        rows_of = got[tower.version].set_index("user_id")
        assert set(rows_of.index) == set(ref)
        for user, (vec, n_items, t_ms) in ref.items():
            np.testing.assert_allclose(rows_of.loc[user, "embedding"], vec, atol=1e-5, rtol=0)
            assert pd.Timestamp(rows_of.loc[user, "event_timestamp"]).value // 10**6 == t_ms
            assert rows_of.loc[user, "history_len"] == n_items
    # Offline: the serving version's user rows only (the pending ones share their key).
    offline = pd.concat(sink.offline_users, ignore_index=True)
    assert set(offline["model_version"]) == {a.version}

    # The switch: the pending version is current, none is pending; one version again.
    towers.version, towers.pending = b.version, None
    sink.frames.clear()
    handler(_accepted(130)[120:])
    assert {v for f in sink.frames for v in f["model_version"]} == {b.version}


def test_a_version_marked_pending_during_a_batch_is_written_before_it_ends() -> None:
    """The check after the interaction log is durable: a catch-up that read the log before
    this batch's events landed relies on this batch writing the pending version."""
    a, b = bootstrap_tower(CFG, seed=0), bootstrap_tower(CFG, seed=1)
    towers = FixedTowers(a, b)
    sink = VersionedSink(_content(12))
    handler = _handler(sink, towers=towers)  # reload_check_s=0: every check reads

    def mark() -> None:
        towers.pending = b.version

    sink.on_append = mark
    handler(_accepted(40))
    assert [set(f["model_version"]) for f in sink.frames] == [{a.version}, {b.version}]
    ref = recompute_users(_log(sink), sink.content, b.tower, H)
    late = sink.frames[1].set_index("user_id")
    assert set(late.index) == set(ref)
    for user, (vec, _, _) in ref.items():
        np.testing.assert_allclose(late.loc[user, "embedding"], vec, atol=1e-5, rtol=0)


def test_a_pending_tower_of_another_content_model_is_not_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = LoadedTower("m-a", bootstrap_tower(CFG).tower, "ident-A")
    b = LoadedTower("m-b", bootstrap_tower(CFG, seed=1).tower, "ident-B")
    towers = FixedTowers(a, b)
    towers.pending = "m-b"
    served = ServedTowers(towers, H, check_s=0)
    with caplog.at_level(logging.ERROR):
        served.refresh()
        served.refresh()
    assert [t.version for t in served.writing()] == ["m-a"]
    assert sum("m-b" in r.getMessage() for r in caplog.records) == 1  # said once


def test_the_first_switch_writes_the_pending_version_too(tmp_path: Path) -> None:
    """Before any promotion the item consumer writes no tower rows and the interaction
    consumer the bootstrap tower's; the first candidate must get their rows all the same."""
    reg, a, _ = _registry(tmp_path)
    cache = ModelCache(reg, check_s=0, follow_pending=True)
    with pytest.raises(VersionError):
        cache.writing()
    reg.mark_pending(a)
    assert [m.version for m in cache.writing()] == [a]
    with pytest.raises(VersionError):
        cache.current()  # readers still have nothing to serve

    served = ServedTowers(RegistryTowers(reg), H, check_s=0)
    served.refresh()
    current, pending = served.current, served.pending
    assert current is not None and current.version.startswith("bootstrap-")
    assert pending is not None and pending.version == a
    assert [t.version for t in served.writing()] == [a, current.version]


def test_backfill_rows_of_a_held_user_equal_the_consumers_partial_rows() -> None:
    """A user embedded without a missing item has a row of the serving version; the
    backfill gives the new version the same row (vector, history_len, event time), so
    after the switch that user is not unknown."""
    from learn_core.inference import user_tower_rows
    from streaming.interaction_consumer import InteractionConsumerSettings, InteractionHandler
    from streaming.user_sinks import ContentLookup, MemoryHistoryStore

    torch.manual_seed(0)
    model = LearnModel(LearnConfig(TowerConfig(content_dim=16, d_model=16, max_len=8)))
    serving = as_serving("m-a", model)
    tower = LoadedTower("m-a", model.user_tower, None, H)
    content = _content(12)
    missing = content.pop("i3")
    sink = MemoryUserSink(content)
    handler = InteractionHandler(
        FixedTowers(tower),
        MemoryHistoryStore(),
        ContentLookup(sink.read_content, 1000, 16),
        sink,
        InteractionConsumerSettings(history_len=H, reload_check_s=0, held_max_s=0),
    )
    handler(_accepted(80))
    log = _log(sink)
    held = set(log.loc[log["item_id"] == "i3", "user_id"])
    assert held and held <= set(sink.online)  # embedded at once without i3 (held_max_s=0)
    got = user_tower_rows(serving, log, content, H, T0, partial=True)
    rows = got.rows.set_index("user_id")
    stamps = dict(zip(got.rows["user_id"], got.latest_event, strict=True))
    assert set(rows.index) == set(sink.online)
    for user, row in sink.online.items():
        np.testing.assert_allclose(rows.loc[user, "embedding"], row["embedding"], atol=1e-5)
        assert rows.loc[user, "history_len"] == row["history_len"]
        assert stamps[user] == pd.Timestamp(row["event_timestamp"])
    assert any(stamps[u].value % 1_000_000 for u in held)  # partial: less 1 µs per event
    content["i3"] = missing
    plain = user_tower_rows(serving, log, content, H, T0).rows
    assert set(plain["user_id"]) == set(sink.online)  # with i3 every user is ready


def test_switch_marks_pending_for_the_last_replay_and_clears_it_even_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from trainers.jobs import switch as switch_mod

    reg, a, b = _registry(tmp_path)
    reg.promote(a)
    seen: list[tuple[str | None, str | None, float]] = []

    def replay(handle, model, *, since, history_len, written):  # noqa: ANN001, ANN202
        seen.append((reg.current_version(), reg.pending_version(), time.monotonic()))
        return 3, since

    monkeypatch.setattr(switch_mod, "catch_up", replay)
    model_b = as_serving(b, reg.load(b))
    t0 = time.monotonic()
    assert switch_mod.switch(None, reg, model_b, since=None, wait_s=0.2) == 3  # type: ignore[arg-type]
    (current, pending, at) = seen[0]
    assert (current, pending) == (a, b)  # the last replay runs while both are written
    assert at - t0 >= 0.2  # after the consumers' check period
    assert reg.current_version() == b and reg.pending_version() is None

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError("offline store down (test)")

    monkeypatch.setattr(switch_mod, "catch_up", broken)
    with pytest.raises(OSError):
        switch_mod.switch(None, reg, as_serving(a, reg.load(a)), since=None, wait_s=0)  # type: ignore[arg-type]
    assert reg.current_version() == b and reg.pending_version() is None
