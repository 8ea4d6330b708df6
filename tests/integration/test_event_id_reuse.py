"""A reused event_id through the real broker and both Feast profiles (issue 11, point 5).

The conflicting record is dead-lettered with ``duplicate_event_id_conflict``; the
identical redelivery changes nothing; ``interaction_log`` and the user's history keep the
first event, once.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from feature_repo.store import FeatureStoreHandle
from learn_core.serving import BootstrapTowers
from streaming.dead_letter import H_OFFSET, H_REASON, parse_headers
from streaming.interaction_consumer import InteractionConsumerSettings, build_interaction_loop
from streaming.item_consumer import close_loop
from streaming.kafka_io import make_consumer, make_producer
from streaming.settings import KafkaSettings
from streaming.user_sinks import FeastUserSink, RedisHistoryStore, open_history_store

pytestmark = pytest.mark.integration


def inter(event_id: str, user: str, item: str, at: str) -> bytes:
    return json.dumps(
        {
            "type": "interaction",
            "event_id": event_id,
            "user_id": user,
            "item_id": item,
            "event_type": "click",
            "occurred_at": at,
        }
    ).encode()


def test_reused_event_id_is_dead_lettered_and_stored_once(
    kafka_bootstrap: str, topic_factory, feast_handle: FeatureStoreHandle
) -> None:
    k = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        interactions_topic=topic_factory("inter", partitions=1),
        items_topic=topic_factory("items"),
        dlq_topic=topic_factory("dlq"),
    )
    first = inter("e-1", "u-1", "i-1", "2024-01-01T00:00:00Z")
    stream = [
        first,
        inter("e-2", "u-1", "i-2", "2024-01-01T00:01:00Z"),
        inter("e-1", "u-1", "i-9", "2024-01-01T00:00:00Z"),  # other item: conflict (offset 2)
        first,  # identical redelivery: a no-op
        inter("e-1", "u-1", "i-1", "2024-01-02T00:00:00Z"),  # other time: conflict (offset 4)
    ]
    producer = make_producer(kafka_bootstrap)
    for value in stream:
        producer.send(k.interactions_topic, key=b"u-1", value=value)
    producer.flush()
    producer.close()

    history = open_history_store(feast_handle)
    s = InteractionConsumerSettings(group_id=f"g-{uuid.uuid4().hex[:8]}", max_batch=2)
    loop, _ = build_interaction_loop(
        kafka_bootstrap,
        FeastUserSink(feast_handle),
        history,
        BootstrapTowers(),
        settings=s,
        kafka=k,
    )
    try:
        stats = loop.run(idle_exit_s=4, max_records=len(stream))
    finally:
        close_loop(loop)
    assert (stats.records, stats.accepted, stats.dead_lettered) == (5, 3, 2)

    dlq = make_consumer(kafka_bootstrap, [k.dlq_topic], group_id=None, consumer_timeout_ms=4000)
    letters = list(dlq)
    dlq.close()
    heads = sorted(
        (parse_headers(r.headers)[H_OFFSET], parse_headers(r.headers)[H_REASON]) for r in letters
    )
    assert heads == [("2", "duplicate_event_id_conflict"), ("4", "duplicate_event_id_conflict")]

    log = feast_handle.read_offline("interaction_log")
    assert sorted(log["event_id"]) == ["e-1", "e-2"]
    assert log.set_index("event_id").loc["e-1", "item_id"] == "i-1"
    stored = history.get_many(["u-1"])["u-1"]
    assert [(e.event_id, e.item_id) for e in stored.entries] == [("e-1", "i-1"), ("e-2", "i-2")]
    history.close()


def test_claims_expire_after_the_retention(feast_handle: FeatureStoreHandle) -> None:
    """Both profiles' claim stores, on their real clocks (Redis: its own key expiry).

    A claim is kept at least the retention (Redis: exactly; SQLite: up to twice it, a
    generation is dropped whole), so past twice the retention every id is new again.
    """
    history = open_history_store(feast_handle)
    keep_s = 2.0
    legacy = isinstance(history, RedisHistoryStore)
    if legacy:  # an earlier version's unbounded hash: still first, then bounded
        history.r.hset(history.events.legacy, "e-old", "fa")
    try:
        got = history.claim_events({"e-1": "fa", "e-2": "fa"}, keep_s)
        assert got == {"e-1": "fa", "e-2": "fa"}
        got = history.claim_events({"e-1": "fb", "e-3": "fb"}, keep_s)
        assert got == {"e-1": "fa", "e-3": "fb"}
        if legacy:
            assert history.claim_events({"e-old": "fb"}, keep_s) == {"e-old": "fa"}
            assert 0 < history.r.pttl(history.events.legacy) <= keep_s * 1000
        time.sleep(2 * keep_s + 0.5)
        got = history.claim_events({"e-1": "fb", "e-old": "fb"}, keep_s)
        assert got == {"e-1": "fb", "e-old": "fb"}
        assert len(history.events) == 2  # e-2 and e-3 are gone as well
    finally:
        history.close()
