"""The pure parts of the consumers: record splitting, dead letters, item rows, cache, replay payloads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from learn_core.embedding.cache import CachedEmbedder, EmbeddingCache
from learn_core.events import Interaction, ItemCreated, to_json_bytes
from learn_core.item_text import render_item
from streaming.consumer import split_records
from streaming.dead_letter import H_OFFSET, H_PARTITION, H_REASON, H_TOPIC, parse_headers
from streaming.item_consumer import item_content_rows
from streaming.replay import interaction_payloads
from streaming.validate import Limits, decode


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


class HashEmbedder:
    """Deterministic in-memory embedder for unit tests (counts model calls)."""

    model_id = "hash-test"
    dim = 8

    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        out = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def test_split_records_keeps_order_and_dead_letters_with_context() -> None:
    good = to_json_bytes(ItemCreated(item_id="a", title="A"))
    recs = [
        Rec("items", 2, 10, 1_700_000_000_000, b"a", good),
        Rec("items", 2, 11, 0, b"k", b"{bad"),
    ]
    ok, bad = split_records(recs, Limits(), expect="item-created")
    assert [a.event.item_id for a in ok] == ["a"] and ok[0].source.offset == 10
    assert len(bad) == 1
    h = parse_headers(bad[0].headers)
    assert h[H_REASON] == "not_json" and h[H_TOPIC] == "items"
    assert h[H_PARTITION] == "2" and h[H_OFFSET] == "11"
    assert bad[0].value == b"{bad" and bad[0].key == b"k"  # original bytes kept


def test_item_rows_latest_event_wins_and_replay_is_identical() -> None:
    t1 = datetime(2025, 1, 1, tzinfo=UTC)
    t2 = datetime(2025, 1, 2, tzinfo=UTC)
    evs = [
        to_json_bytes(ItemCreated(item_id="a", title="Old", created_at=t1)),
        to_json_bytes(ItemCreated(item_id="a", title="New", created_at=t2)),
        to_json_bytes(ItemCreated(item_id="b", title="B")),  # no created_at -> record time
    ]
    recs = [Rec("items", 0, i, 1_735_776_000_000, None, v) for i, v in enumerate(evs)]
    ok, _ = split_records(recs, Limits(), expect="item-created")
    emb = HashEmbedder()
    rows = item_content_rows(ok, emb)
    assert list(rows["item_id"]) == ["a", "b"]
    assert rows.loc[0, "event_timestamp"] == pd.Timestamp(t2)
    assert rows.loc[1, "event_timestamp"] == pd.Timestamp(1_735_776_000_000, unit="ms", tz="UTC")
    expect_a = emb.embed(["Title: New"])[0]
    np.testing.assert_array_equal(rows.loc[0, "embedding"], expect_a)
    again = item_content_rows(ok, emb)
    pd.testing.assert_frame_equal(
        rows.drop(columns="created"), again.drop(columns="created"), check_exact=True
    )


def test_cached_embedder_runs_model_once_per_text(tmp_path) -> None:
    inner = HashEmbedder()
    cached = CachedEmbedder(inner, EmbeddingCache(10, tmp_path / "c.sqlite"))
    a = cached.embed(["x", "y", "x"])
    assert inner.texts == 2
    b = cached.embed(["y", "x"])
    assert inner.texts == 2 and cached.hits == 3
    np.testing.assert_array_equal(a[[1, 0]], b)
    # A new process (fresh LRU) still hits the SQLite layer.
    inner2 = HashEmbedder()
    c = CachedEmbedder(inner2, EmbeddingCache(10, tmp_path / "c.sqlite")).embed(["x"])
    assert inner2.texts == 0
    np.testing.assert_array_equal(c[0], a[0])


def test_replay_payloads_are_valid_interactions() -> None:
    df = pd.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "user_id": ["1", "2"],
            "item_id": ["10", "20"],
            "event_type": ["rating", "click"],
            "value": [4.0, float("nan")],
            "occurred_at": pd.to_datetime(
                ["1998-01-01T00:00:00Z", "1998-01-02T00:00:01Z"], utc=True
            ),
        }
    )
    out = list(interaction_payloads(df))
    assert [k for k, _ in out] == [b"1", b"2"]
    evs = [decode(v, limits=Limits(), expect="interaction") for _, v in out]
    assert all(isinstance(e, Interaction) for e in evs)
    assert evs[0].value == 4.0 and evs[1].value is None
    assert evs[1].occurred_at == datetime(1998, 1, 2, 0, 0, 1, tzinfo=UTC)
    assert "value" not in json.loads(out[1][1])


def test_render_item_of_sample_catalogue_is_nonempty() -> None:
    from learn_core.datasets import load_dataset

    ds = load_dataset("sample")
    texts = [render_item(i) for i in ds.items[:20]]
    assert all(t.startswith("Title: ") for t in texts) and len(set(texts)) == 20


def test_consumer_command_runs_the_service_and_prints_its_counts(capsys) -> None:
    import argparse

    from streaming.consumer import LoopStats
    from streaming.service_cli import add_consumer_command

    seen = {}

    def run(stop: object = None, idle_exit_s: float | None = None) -> LoopStats:
        seen["idle"] = idle_exit_s
        seen["stop"] = stop
        stats = LoopStats()
        stats.records, stats.accepted, stats.dead_lettered = 5, 4, 1
        return stats

    parser = argparse.ArgumentParser()
    add_consumer_command(parser.add_subparsers(dest="command"), "consume-x", "help", run)
    args = parser.parse_args(["consume-x", "--idle-exit", "2.5"])
    assert args.func(args) == 0
    assert seen["idle"] == 2.5
    assert hasattr(seen["stop"], "set")  # the event that SIGTERM/SIGINT set
    assert "consumed 5 records: 4 accepted, 1 dead-lettered" in capsys.readouterr().out


def test_polled_offsets_equal_the_per_record_reference() -> None:
    from kafka.structs import TopicPartition

    from streaming.consumer import next_offsets, polled_offsets

    rng = np.random.default_rng(3)
    polled: dict[TopicPartition, list[Rec]] = {}
    for p in range(5):
        start = int(rng.integers(0, 1000))
        n = int(rng.integers(0, 4))  # an empty partition list, too
        tp = TopicPartition("t", p)
        polled[tp] = [Rec("t", p, start + i, 0, None, b"{}") for i in range(n)]
    flat = [r for batch in polled.values() for r in batch]
    assert polled_offsets(polled) == next_offsets(flat)
    assert polled_offsets(polled)  # the case is not vacuous


def test_gathered_records_of_revoked_partitions_are_dropped_with_their_offsets() -> None:
    from kafka.structs import TopicPartition

    from streaming.consumer import _without, polled_offsets

    polled = {
        TopicPartition("t", p): [Rec("t", p, 10 * p + i, 0, None, b"{}") for i in range(3)]
        for p in range(4)
    }
    flat = [r for batch in polled.values() for r in batch]
    kept, offsets = _without(flat, polled_offsets(polled), {TopicPartition("t", 1)})
    assert [r.partition for r in kept] == [0, 0, 0, 2, 2, 2, 3, 3, 3]  # order kept
    assert offsets == {TopicPartition("t", p): 10 * p + 3 for p in (0, 2, 3)}
    # a partition of another topic with the same number is not the revoked one
    other = [Rec("u", 1, 0, 0, None, b"{}")]
    assert _without(other, {TopicPartition("u", 1): 1}, {TopicPartition("t", 1)})[0] == other
