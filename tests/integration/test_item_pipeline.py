"""Item events through the real broker into real Feast stores (issue 2's integration test).

10,000 item events, a tenth malformed in assorted ways, with the consumer crashing
between a write and its commit and a second consumer of the group taking over:
- every good event is in the online store with the model's vector;
- every bad event is in the dead-letter topic with its reason and source;
- nothing is duplicated (online or offline) after the restart.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest

from feature_repo.schema import ITEM_CONTENT
from learn_core.datasets import load_dataset
from learn_core.embedding.cache import CachedEmbedder, EmbeddingCache
from learn_core.events import ItemCreated, to_json_bytes
from learn_core.item_text import render_item
from streaming.dead_letter import H_OFFSET, H_PARTITION, H_REASON, H_TOPIC, parse_headers
from streaming.item_consumer import (
    ItemConsumerSettings,
    build_item_loop,
    close_loop,
    content_version,
)
from streaming.kafka_io import make_consumer, make_producer
from streaming.settings import KafkaSettings
from streaming.sinks import FeastItemSink

pytestmark = pytest.mark.integration

N_EVENTS = 10_000
N_BAD = N_EVENTS // 10
TEXT_CAP = 2_000


class Crash(BaseException):
    """Escapes the loop's retry (which catches Exception), like a killed process."""


@pytest.fixture(scope="module")
def embedder():
    from learn_core.embedding.hf import HFEmbedder

    return CachedEmbedder(HFEmbedder(), EmbeddingCache(max_entries=50_000))


def bad_records(rng: random.Random) -> list[tuple[bytes, bytes, str]]:
    """(key, value, expected reason) for assorted malformed records."""
    ok = {"type": "item-created", "item_id": "x", "title": "t"}
    makers = [
        (lambda: b"this is not json {", "not_json"),
        (lambda: b"\xff\xfe\x00binary", "not_json"),
        (
            lambda: json.dumps({k: v for k, v in ok.items() if k != "title"}).encode(),
            "schema_violation",
        ),
        (lambda: json.dumps({**ok, "price": "free"}).encode(), "schema_violation"),
        (lambda: json.dumps({**ok, "item_id": 42}).encode(), "schema_violation"),
        (lambda: json.dumps({**ok, "type": "item-exploded"}).encode(), "unknown_event_type"),
        (lambda: json.dumps({**ok, "description": "x" * (TEXT_CAP + 10)}).encode(), "oversized"),
        (
            lambda: json.dumps({**ok, "created_at": "2999-01-01T00:00:00Z"}).encode(),
            "future_timestamp",
        ),
        (
            lambda: json.dumps(
                {
                    "type": "interaction",
                    "event_id": "e",
                    "user_id": "u",
                    "item_id": "i",
                    "event_type": "click",
                    "occurred_at": "2024-01-01T00:00:00Z",
                }
            ).encode(),
            "wrong_topic",
        ),
    ]
    out = []
    for n in range(N_BAD):
        make, reason = makers[n % len(makers)]
        out.append((f"bad-{n}".encode(), make(), reason))
    rng.shuffle(out)
    return out


def test_items_to_feast_with_dead_letters_and_restart(
    kafka_bootstrap, topic_factory, feast_handle, embedder, monkeypatch
) -> None:
    monkeypatch.setenv("LEARNREC_LIMITS_MAX_TEXT_CHARS", str(TEXT_CAP))
    rng = random.Random(7)
    items_topic = topic_factory("items", partitions=4)
    dlq_topic = topic_factory("dlq", partitions=1)
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, items_topic=items_topic, dlq_topic=dlq_topic
    )

    base = load_dataset("sample").items
    n_good = N_EVENTS - N_BAD
    good = [
        base[k % len(base)].model_copy(update={"item_id": f"{base[k % len(base)].item_id}-r{k}"})
        for k in range(n_good)
    ]
    bad = bad_records(rng)
    stream: list[tuple[bytes, bytes]] = [(g.item_id.encode(), to_json_bytes(g)) for g in good]
    stream += [(k, v) for k, v, _ in bad]
    rng.shuffle(stream)
    producer = make_producer(kafka_bootstrap)
    sent = {}
    for key, value in stream:
        sent[key] = value
        producer.send(items_topic, key=key, value=value)
    producer.flush()
    producer.close()

    sink = FeastItemSink(feast_handle)
    settings = ItemConsumerSettings(group_id=f"g-{items_topic}", max_batch=500, disk_cache=False)

    # First consumer: crashes after writing its 4th batch, before committing it.
    loop1, handler1 = build_item_loop(
        kafka_bootstrap, sink, embedder, settings=settings, kafka=kafka
    )
    inner, calls = loop1.handler, []

    def crashing(batch):  # noqa: ANN001
        inner(batch)
        calls.append(len(batch))
        if len(calls) == 4:
            raise Crash

    loop1.handler = crashing
    with pytest.raises(Crash):
        loop1.run(idle_exit_s=20)
    close_loop(loop1)
    written_before = handler1.written
    assert written_before > 0

    # Second consumer of the same group picks up from the last commit.
    loop2, handler2 = build_item_loop(
        kafka_bootstrap, sink, embedder, settings=settings, kafka=kafka
    )
    loop2.run(idle_exit_s=8)
    close_loop(loop2)
    # The crashed batch was written twice: at-least-once delivery really happened.
    assert written_before + handler2.written > n_good

    # Online: every good item, with the model's vector and version.
    ids = [g.item_id for g in good]
    got = sink.read_item_content(ids)
    assert len(got) == n_good
    distinct = {render_item(g) for g in good}
    expect = dict(zip(distinct, embedder.inner.embed(list(distinct)), strict=True))
    version = content_version(embedder)
    for g in good:
        vec, ver, _ = got[g.item_id]
        assert ver == version
        np.testing.assert_allclose(vec, expect[render_item(g)], atol=1e-5)

    # Offline: exactly one row per good item (the replayed batch is not duplicated).
    offline = feast_handle.read_offline(ITEM_CONTENT.name)
    assert len(offline) == n_good
    assert offline["item_id"].is_unique and set(offline["item_id"]) == set(ids)

    # Dead letters: every bad record, once, with its reason, source and original bytes.
    dlq = make_consumer(kafka_bootstrap, [dlq_topic], group_id=None, consumer_timeout_ms=5000)
    letters = list(dlq)
    dlq.close()
    by_key = Counter(r.key for r in letters)
    expected_reason = {k: reason for k, _, reason in bad}
    assert set(by_key) == set(expected_reason)
    for r in letters:
        h = parse_headers(r.headers)
        assert h[H_REASON] == expected_reason[r.key], (r.key, h)
        assert h[H_TOPIC] == items_topic and int(h[H_PARTITION]) in range(4)
        assert int(h[H_OFFSET]) >= 0
        assert r.value == sent[r.key]
    # Dead letters of the crashed batch may repeat (at-least-once), none is missing.
    assert sum(by_key.values()) >= N_BAD


def test_item_event_without_created_at_uses_record_time(
    kafka_bootstrap, topic_factory, feast_handle, embedder
) -> None:
    items_topic = topic_factory("items", partitions=1)
    dlq_topic = topic_factory("dlq", partitions=1)
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, items_topic=items_topic, dlq_topic=dlq_topic
    )
    item = ItemCreated(item_id="solo", title="Solo trail shoe", category="Shoes")
    producer = make_producer(kafka_bootstrap)
    meta = producer.send(items_topic, key=b"solo", value=to_json_bytes(item)).get(timeout=30)
    producer.close()
    sink = FeastItemSink(feast_handle)
    settings = ItemConsumerSettings(group_id=f"g-{items_topic}", disk_cache=False)
    loop, handler = build_item_loop(kafka_bootstrap, sink, embedder, settings=settings, kafka=kafka)
    loop.run(idle_exit_s=5)
    close_loop(loop)
    assert handler.written == 1
    vec, _, ts = sink.read_item_content(["solo"])["solo"]
    assert abs(ts.timestamp() * 1000 - meta.timestamp) < 1000
    np.testing.assert_allclose(vec, embedder.inner.embed([render_item(item)])[0], atol=1e-5)
