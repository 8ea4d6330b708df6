"""Interactions through the real broker into real Feast: features, late items, consistency.

Content embeddings are written straight into the online store (seeded random unit
vectors, 384-d) instead of running the item consumer, so these tests exercise the
interaction path alone and stay well under a minute.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from feature_repo.store import FeatureStoreHandle
from learn_core.datasets import Dataset, load_dataset
from learn_core.history import to_ms
from learn_core.inference import recompute_users
from learn_core.serving import BootstrapTowers
from streaming.interaction_consumer import (
    InteractionConsumerSettings,
    InteractionHandler,
    build_interaction_loop,
)
from streaming.item_consumer import close_loop
from streaming.producer import EventProducer
from streaming.replay import replay
from streaming.settings import KafkaSettings
from streaming.user_sinks import (
    CONTENT_VIEW,
    USER_VIEW,
    FeastUserSink,
    HistoryStore,
    open_history_store,
)

pytestmark = pytest.mark.integration

H = 50


def content_vectors(ids: list[str], seed: int = 7) -> dict[str, np.ndarray]:
    v = np.random.default_rng(seed).standard_normal((len(ids), 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return dict(zip(ids, v, strict=True))


def write_content(handle: FeatureStoreHandle, vecs: dict[str, np.ndarray]) -> None:
    ids = list(vecs)
    handle.write_online(
        CONTENT_VIEW,
        pd.DataFrame(
            {
                "item_id": ids,
                "embedding": [vecs[i] for i in ids],
                "model_version": "test-content",
                "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
            }
        ),
    )


#: The data sets carry their original (2024 or older) event times as record timestamps;
#: with the broker's default time-based retention (7 days) it may delete them as soon as
#: a segment rolls. Replayed topics must keep everything.
KEEP = {"retention.ms": "-1"}


def kafka_settings(bootstrap: str, topic_factory: Callable[..., str]) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        interactions_topic=topic_factory("inter", partitions=2, configs=KEEP),
        items_topic=topic_factory("items"),
        dlq_topic=topic_factory("dlq"),
    )


def produce(ds: Dataset, k: KafkaSettings, limit: int, *, restamp: bool = False) -> None:
    assert k.bootstrap_servers
    with EventProducer(k.bootstrap_servers, k) as producer:
        replay(ds, producer, items=False, limit=limit, restamp=restamp)


def consume(
    handle: FeatureStoreHandle,
    history: HistoryStore,
    k: KafkaSettings,
    *,
    group: str,
    until: Callable[[InteractionHandler], bool],
    timeout_s: float = 60.0,
    **settings: object,
) -> InteractionHandler:
    """Run one consumer until ``until(handler)`` holds (checked after each step)."""
    assert k.bootstrap_servers
    s = InteractionConsumerSettings(group_id=group, history_len=H, **settings)
    loop, handler = build_interaction_loop(
        k.bootstrap_servers, FeastUserSink(handle), history, BootstrapTowers(), settings=s, kafka=k
    )
    stop = threading.Event()
    timer = threading.Timer(timeout_s, stop.set)
    timer.start()
    try:
        while not stop.is_set() and not until(handler):
            loop.step(stop)
    finally:
        timer.cancel()
        close_loop(loop)
    assert not stop.is_set(), f"consumer did not finish in {timeout_s}s: {handler.stats}"
    return handler


def reference(
    handle: FeatureStoreHandle, handler: InteractionHandler
) -> dict[str, tuple[np.ndarray, int, int]]:
    """Batch recomputation from the *offline* interaction log and the online content."""
    log = handle.read_offline("interaction_log")
    items = sorted(set(log["item_id"]))
    rows = handle.read_embeddings(CONTENT_VIEW, items)
    content = {i: rows.vectors[r] for r, i in enumerate(rows.ids) if rows.found[r]}
    assert handler.model is not None
    return recompute_users(log, content, handler.model.tower, H)


def assert_online_matches(
    handle: FeatureStoreHandle, expected: dict[str, tuple[np.ndarray, int, int]], version: str
) -> None:
    users = sorted(expected)
    got = handle.read_embeddings(USER_VIEW, users, model_version=version)
    assert got.found.all(), [u for u, f in zip(users, got.found, strict=True) if not f][:5]
    assert set(got.model_version) == {version}
    want = np.stack([expected[u][0] for u in users])
    assert np.abs(got.vectors - want).max() <= 1e-5
    assert list(got.extra["history_len"]) == [expected[u][1] for u in users]
    assert [to_ms(t) for t in got.event_timestamp] == [expected[u][2] for u in users]


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipelined", "sequential"])
def test_stream_to_feast_holds_late_items_and_matches_batch(
    kafka_bootstrap: str,
    topic_factory,
    feast_handle: FeatureStoreHandle,  # fixture
    pipeline: bool,
) -> None:
    ds = load_dataset("sample")
    n = 3000
    df = ds.interactions.iloc[:n]
    late = sorted(df["item_id"].value_counts().index[-3:])  # rare items: a few held users
    vecs = content_vectors(ds.item_ids)
    write_content(feast_handle, {i: v for i, v in vecs.items() if i not in late})
    k = kafka_settings(kafka_bootstrap, topic_factory)
    produce(ds, k, n)
    with EventProducer(kafka_bootstrap, k) as p:  # one bad record: dead-lettered, not fatal
        p.send_raw(k.interactions_topic, b"u-bad", b'{"type":"interaction"}')

    history = open_history_store(feast_handle)
    group = f"g-{uuid.uuid4().hex[:8]}"
    h1 = consume(
        feast_handle,
        history,
        k,
        group=group,
        until=lambda h: h.stats.events >= n,
        pipeline=pipeline,
        held_max_s=3600,  # the hold itself; its bound: test_missing_item.py
    )
    assert h1.stats.events == n
    held = set(history.held(None))
    assert held and h1.stats.held_interactions >= len(held)
    for u, hist in history.held(None).items():
        assert set(hist.item_ids) & set(late), u

    ref = reference(feast_handle, h1)
    assert len(feast_handle.read_offline("interaction_log")) == n
    assert set(ref) == set(df["user_id"]) - held  # the log lacks nothing; held users wait
    assert h1.model is not None
    assert_online_matches(feast_handle, ref, h1.model.version)
    # A held user keeps the embedding of their last fully resolved window (if any).
    held_hist = history.held(None)
    stale = feast_handle.read_embeddings(USER_VIEW, sorted(held), h1.model.version)
    for u, found, ts in zip(stale.ids, stale.found, stale.event_timestamp, strict=True):
        assert not found or to_ms(ts) < held_hist[u].latest_ms

    # The late items arrive; with no new interaction the idle re-check releases the users.
    write_content(feast_handle, {i: vecs[i] for i in late})
    h2 = consume(
        feast_handle,
        history,
        k,
        group=group,
        until=lambda h: h.stats.released_users >= len(held),
        held_recheck_s=0.2,
        pipeline=pipeline,
    )
    assert h2.stats.events == 0  # the group's offsets were committed: nothing re-read
    assert not history.held(None)
    full = reference(feast_handle, h2)
    assert set(full) == set(df["user_id"])
    assert_online_matches(feast_handle, full, h1.model.version)

    offline_users = feast_handle.read_offline(USER_VIEW)
    assert set(offline_users["user_id"]) == set(full)
    assert set(offline_users["model_version"]) == {h1.model.version}
    history.close()
