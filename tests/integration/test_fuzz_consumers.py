"""Fuzz both consumers through the real broker (issue 11): thousands of generated bad records.

Hypothesis generates bad records of every kind (random bytes, non-objects, every field of
both event types set to a wrong value, missing and unknown fields, deep nesting, NUL,
out-of-range numbers, bool/float schema versions, wrong topic, future and naive times),
plus tombstones, records over the size cap and one at the broker's 1 MB limit. They are
interleaved with good events and sent to the real broker; the real item and interaction
consumers (real loops, embedded Feast store, the bundled content model) read them.

Asserted: no crash; every bad record is dead-lettered exactly once with the reason the
pure ``decode`` gives it (checked to be a rejection: a generated record that validates is
a finding); every good record is stored (content vectors online, interactions in the
offline log); the groups committed past everything.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from feature_repo.settings import FeastSettings
from feature_repo.store import open_store
from learn_core.events import Interaction, ItemCreated, to_json_bytes
from learn_core.serving import BootstrapTowers
from streaming.dead_letter import H_REASON, H_TRUNCATED, parse_headers
from streaming.interaction_consumer import InteractionConsumerSettings, build_interaction_loop
from streaming.item_consumer import ItemConsumerSettings, build_item_loop, close_loop
from streaming.kafka_io import make_consumer, make_producer
from streaming.settings import KafkaSettings
from streaming.sinks import FeastItemSink
from streaming.user_sinks import CONTENT_VIEW, FeastUserSink, open_history_store
from streaming.validate import Rejection, decode, limits_from_env

pytestmark = pytest.mark.integration

N_BAD_INTER = 2_000
N_BAD_ITEMS = 800
N_GOOD_INTER = 1_000
N_GOOD_ITEMS = 120
KINDS = ["view", "click", "like", "add_to_cart", "purchase", "rating", "share", "dislike"]
LIMITS = limits_from_env()

GOOD_INTER = {
    "schema_version": 1,
    "type": "interaction",
    "event_id": "e",
    "user_id": "u",
    "item_id": "i",
    "event_type": "rating",
    "value": 3,
    "occurred_at": "2024-01-01T00:00:00Z",
}
GOOD_ITEM = {
    "schema_version": 1,
    "type": "item-created",
    "item_id": "it",
    "title": "A red kettle",
    "category": "kitchen",
    "brand": "Acme",
    "price": 10.5,
    "keywords": ["red"],
    "attributes": {"size": "1l"},
    "description": "Boils water.",
    "created_at": "2024-01-01T00:00:00Z",
}

# ----------------------------------------------------------------- generators

_junk = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
_bad_version = st.sampled_from([True, False, 1.0, 0, 2, "1", None, [1], {"v": 1}])
_bad_id = st.sampled_from(["", "x" * 257, "a\x00b", "tab\there", "nl\n", 5, None, True, ["x"]]) | (
    st.text(max_size=6).map(lambda t: t + "\x00")
)
_bad_time = st.sampled_from(
    ["yesterday", "", "2024-01-01T00:00:00", "2024-13-01T00:00:00Z", "2999-01-01T00:00:00Z"]
) | st.sampled_from([1_700_000_000, None, True, ["2024-01-01T00:00:00Z"]])
_bad_value = (
    st.sampled_from([True, "5", [1], {"v": 1}, -1e308, 1e308, 2**63])
    | st.floats(min_value=1e6, exclude_min=True)
    | st.floats(max_value=-1e6, exclude_max=True)
    | st.floats(allow_nan=True).filter(lambda f: f != f)
)
_nul_text = st.text(max_size=6).map(lambda t: t + "\x00" + t)

BAD_INTER_FIELDS = {
    "schema_version": _bad_version,
    "type": st.sampled_from(["item-created", "Interaction", "", None, 3, ["interaction"]]),
    "event_id": _bad_id,
    "user_id": _bad_id,
    "item_id": _bad_id,
    "event_type": st.text(max_size=8).filter(lambda t: t not in KINDS)
    | _junk.filter(lambda v: not isinstance(v, str)),
    "value": _bad_value,
    "occurred_at": _bad_time,
}
BAD_ITEM_FIELDS = {
    "schema_version": _bad_version,
    "type": st.sampled_from(["interaction", "item", None, 7]),
    "item_id": _bad_id,
    "title": st.sampled_from(["", None, 5, ["t"]]) | _nul_text,
    "category": _nul_text | st.sampled_from([5, ["c"], {"c": "d"}]),
    "brand": _nul_text | st.sampled_from([True, 1.5]),
    "description": _nul_text | st.sampled_from([0, ["d"]]),
    "price": st.sampled_from([-1, "cheap", True, 1e13, -0.5, [1]])
    | st.floats(allow_nan=True).filter(lambda f: f != f),
    "keywords": st.sampled_from(["red", [1], [None], {"k": "v"}]) | st.lists(_nul_text, min_size=1),
    "attributes": st.sampled_from([{"a": 1}, ["x"], "a=b", {"a": None}])
    | st.dictionaries(_nul_text, st.text(max_size=3), min_size=1, max_size=2),
    "created_at": _bad_time.filter(lambda v: v is not None),  # null: no creation time, valid
}


@st.composite
def mutated(draw: st.DrawFn, base: dict, bad_fields: dict) -> bytes:
    """A valid event with one to three required fields made invalid or dropped, or unknown
    fields added."""
    required = [f for f in ("type", "event_id", "user_id", "item_id", "title", "event_type",
                            "occurred_at") if f in base]  # fmt: skip
    obj = dict(base)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "drop", "extra"]))
        if op == "set":
            field = draw(st.sampled_from(sorted(bad_fields)))
            obj[field] = draw(bad_fields[field])
        elif op == "drop":
            obj.pop(draw(st.sampled_from(required)), None)
        else:
            obj[draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in base))] = draw(_junk)
    return json.dumps(obj).encode()


@st.composite
def deep(draw: st.DrawFn, base: dict) -> bytes:
    depth = draw(st.integers(17, 40_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    nest = opener * depth + b"1" + closer * depth
    if draw(st.booleans()):
        return nest
    return json.dumps(base).encode()[:-1] + b', "extra": ' + nest + b"}"


def bad_records(base: dict, bad_fields: dict, n: int, other_type: dict) -> list[bytes]:
    """``n`` generated bad records for a topic whose good events look like ``base``."""
    out: list[bytes] = []
    strategy = st.one_of(
        mutated(base, bad_fields),
        mutated(base, bad_fields),
        mutated(base, bad_fields),
        deep(base),
        st.binary(max_size=64),
        st.text(max_size=40).map(str.encode),
        _junk.map(lambda v: json.dumps(v).encode()),  # JSON, but not an object
        st.just(json.dumps(other_type).encode()),  # a valid event of the other topic
    )

    per = 20  # records per example: hypothesis' per-example overhead dominates otherwise

    @settings(
        max_examples=n // per,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(strategy, min_size=per, max_size=per))
    def collect(raws: list[bytes]) -> None:
        out.extend(raws)

    collect()
    return out


def oracle(raw: bytes | None, expect: str) -> str:
    """The reason the pure decoder gives; the record must be rejected."""
    out = decode(raw, limits=LIMITS, expect=expect)
    assert isinstance(out, Rejection), f"generated bad record was accepted: {raw[:300]!r}"
    return out.reason


def extras(base: dict) -> list[bytes | None]:
    """Bad records hypothesis is not asked for: tombstones, sizes at the limits, a future time."""
    over = json.dumps({**base, "pad": "x" * (LIMITS.max_record_bytes + 10)}).encode()
    near_mb = json.dumps({**base, "pad": ""}).encode()
    near_mb = near_mb[:-2] + b"x" * (1_048_500 - len(near_mb)) + b'"}'
    at = "occurred_at" if "occurred_at" in base else "created_at"
    future = json.dumps({**base, at: "2999-01-01T00:00:00Z"}).encode()
    return [None, None, over, near_mb, future]


# ---------------------------------------------------------------------- test


def test_fuzzed_records_are_dead_lettered_and_good_ones_stored(
    kafka_bootstrap: str, topic_factory, tmp_path: Path
) -> None:
    rng = random.Random(11)
    k = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        interactions_topic=topic_factory("inter", partitions=2, configs={"retention.ms": "-1"}),
        items_topic=topic_factory("items", partitions=2),
        dlq_topic=topic_factory("dlq"),
    )
    handle = open_store(
        FeastSettings(profile="embedded", project=f"z_{uuid.uuid4().hex[:10]}", data_dir=tmp_path)
    )
    topics = {"interaction": k.interactions_topic, "item-created": k.items_topic}

    # Good events: unique ids, items with content (so users are embedded, too).
    items = [
        ItemCreated(item_id=f"it-{n}", title=f"Kettle model {n}", price=float(n), keywords=["k"])
        for n in range(N_GOOD_ITEMS)
    ]
    inters = [
        Interaction(
            event_id=f"ev-{n}",
            user_id=f"u-{rng.randrange(50)}",
            item_id=f"c-{rng.randrange(30)}",
            event_type=rng.choice(KINDS),  # type: ignore[arg-type]
            value=rng.choice([None, 1.0, 4.5, -1e6, 1e6]),
            occurred_at=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
        )
        for n in range(N_GOOD_INTER)
    ]
    vecs = np.random.default_rng(0).standard_normal((30, 384)).astype(np.float32)
    handle.write_online(
        CONTENT_VIEW,
        pd.DataFrame(
            {
                "item_id": [f"c-{n}" for n in range(30)],
                "embedding": list(vecs / np.linalg.norm(vecs, axis=1, keepdims=True)),
                "model_version": "test-content",
                "event_timestamp": pd.Timestamp("2023-01-01", tz="UTC"),
            }
        ),
    )

    # Bad records, each under its own key, with the reason decode gives it.
    bad: dict[bytes, tuple[str, bytes | None, str]] = {}  # key -> (topic kind, value, reason)
    for kind, base, fields, n, other in [
        ("interaction", GOOD_INTER, BAD_INTER_FIELDS, N_BAD_INTER, GOOD_ITEM),
        ("item-created", GOOD_ITEM, BAD_ITEM_FIELDS, N_BAD_ITEMS, GOOD_INTER),
    ]:
        for raw in [*bad_records(base, fields, n, other), *extras(base)]:
            bad[f"bad-{len(bad)}".encode()] = (kind, raw, oracle(raw, kind))
    reasons = {r for _, _, r in bad.values()}
    assert {"not_json", "schema_violation", "json_too_deep", "nul_character", "oversized",
            "wrong_topic", "unknown_event_type", "future_timestamp"} <= reasons  # fmt: skip

    stream = [("interaction", e.user_id.encode(), to_json_bytes(e)) for e in inters]
    stream += [("item-created", i.item_id.encode(), to_json_bytes(i)) for i in items]
    stream += [(kind, key, raw) for key, (kind, raw, _) in bad.items()]
    rng.shuffle(stream)
    producer = make_producer(kafka_bootstrap, max_request_size=2 * 1_048_576)
    for kind, key, raw in stream:
        producer.send(topics[kind], key=key, value=raw)
    producer.flush()
    producer.close()

    n_bad = {kind: sum(1 for b in bad.values() if b[0] == kind) for kind in topics}

    # The real consumers, to the end of their topics.
    from learn_core.embedding.hf import HFEmbedder

    group = f"g-{uuid.uuid4().hex[:8]}"
    item_loop, item_handler = build_item_loop(
        kafka_bootstrap,
        FeastItemSink(handle),
        HFEmbedder(),
        settings=ItemConsumerSettings(group_id=group + "-items", disk_cache=False),
        kafka=k,
    )
    try:
        item_stats = item_loop.run(idle_exit_s=30, max_records=n_bad["item-created"] + N_GOOD_ITEMS)
    finally:
        close_loop(item_loop)
    history = open_history_store(handle)
    loop, handler = build_interaction_loop(
        kafka_bootstrap,
        FeastUserSink(handle),
        history,
        BootstrapTowers(),
        settings=InteractionConsumerSettings(group_id=group, max_batch=1_000),
        kafka=k,
    )
    try:
        stats = loop.run(idle_exit_s=30, max_records=n_bad["interaction"] + N_GOOD_INTER)
    finally:
        close_loop(loop)
        history.close()

    assert (item_stats.records, item_stats.dead_lettered) == (
        N_GOOD_ITEMS + n_bad["item-created"],
        n_bad["item-created"],
    )
    assert (stats.records, stats.dead_lettered) == (
        N_GOOD_INTER + n_bad["interaction"],
        n_bad["interaction"],
    )

    # Every bad record once in the dead-letter topic, with decode's reason.
    dlq = make_consumer(kafka_bootstrap, [k.dlq_topic], group_id=None, consumer_timeout_ms=5000)
    letters = list(dlq)
    dlq.close()
    assert sorted(r.key for r in letters) == sorted(bad)
    for r in letters:
        kind, raw, reason = bad[r.key]
        h = parse_headers(r.headers)
        assert h[H_REASON] == reason, (raw[:200] if raw else raw, h)
        if h[H_TRUNCATED] == "true":
            assert raw is not None and raw.startswith(r.value) and len(raw) > 1_000_000
        else:
            assert r.value == raw

    # Every good record stored.
    got = FeastItemSink(handle).read_item_content([i.item_id for i in items])
    assert len(got) == N_GOOD_ITEMS and item_handler.written == N_GOOD_ITEMS
    log = handle.read_offline("interaction_log")
    assert sorted(log["event_id"]) == sorted(e.event_id for e in inters)
    assert handler.stats.users_written > 0
    handle.close()
