"""Item consumer: item-created events -> content embeddings (CEG) -> Feast online + offline.

The core, ``item_content_rows``, is a plain function of the accepted events and
an embedder; the Kafka loop and the Feast sink are adapters around it.
"""

from __future__ import annotations

import argparse
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from learn_core.embedding.base import ContentEmbedder
from learn_core.embedding.identity import content_identity
from learn_core.events import ITEM_CREATED, ItemCreated
from learn_core.item_text import render_item
from learn_core.serving import ModelCache, ModelSource
from learn_core.settings import cache_dir, load
from streaming.consumer import (
    Accepted,
    ConsumerSettings,
    LoopStats,
    MicroBatchLoop,
    close_loop,
)
from streaming.sinks import ItemContentSink, ItemTowerSink

log = logging.getLogger(__name__)


class ItemConsumerSettings(ConsumerSettings):
    """Item consumer (env prefix ``LEARNREC_ITEM_CONSUMER_``)."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_ITEM_CONSUMER_", extra="forbid", allow_inf_nan=False
    )

    group_id: str = Field("learn-item-consumer", min_length=1, description="Kafka consumer group")
    max_batch: int = Field(256, ge=1, le=100_000, description="records per micro-batch")
    cache_entries: int = Field(
        200_000, ge=0, le=100_000_000, description="in-process embedding cache size"
    )
    disk_cache: bool = Field(True, description="persist the embedding cache in the cache dir")


def content_version(embedder: ContentEmbedder) -> str:
    """The version stamped on every content embedding: the content model's identity.

    A digest of weights, tokenizer, max_length, pooling, dtype and text template
    (``learn_core.embedding.identity``), the same string model manifests record.
    """
    return content_identity(embedder)


def item_content_rows(
    accepted: list[Accepted], embedder: ContentEmbedder, now: datetime | None = None
) -> pd.DataFrame:
    """Embed a micro-batch of item events; one row per item (its latest event wins).

    ``event_timestamp`` is the item's ``created_at`` or, when the producer left it
    out, the Kafka record time: a replay yields the same key and the same vector,
    so writes are idempotent by (item_id, event_timestamp).
    """
    latest: dict[str, tuple[datetime, int, ItemCreated]] = {}
    for a in accepted:
        ev = a.event
        if not isinstance(ev, ItemCreated):
            continue
        ts = ev.created_at or datetime.fromtimestamp((a.source.timestamp_ms or 0) / 1000, UTC)
        key = (ts, a.source.offset)
        cur = latest.get(ev.item_id)
        if cur is None or key >= cur[:2]:
            latest[ev.item_id] = (ts, a.source.offset, ev)
    if not latest:
        return pd.DataFrame(
            columns=["item_id", "embedding", "model_version", "event_timestamp", "created"]
        )
    ids = list(latest)
    vecs = embedder.embed([render_item(latest[i][2]) for i in ids])
    version = content_version(embedder)
    now = now or datetime.now(UTC)
    return pd.DataFrame(
        {
            "item_id": ids,
            "embedding": list(vecs),
            "model_version": version,
            "event_timestamp": pd.to_datetime([latest[i][0] for i in ids], utc=True),
            "created": pd.Timestamp(now),
        }
    )


class ItemHandler:
    """Loop handler: embed and write. Raises on write failure so the loop retries."""

    def __init__(self, embedder: ContentEmbedder, sink: ItemContentSink) -> None:
        self.embedder = embedder
        self.sink = sink
        self.written = 0

    def __call__(self, accepted: list[Accepted]) -> None:
        rows = item_content_rows(accepted, self.embedder)
        if len(rows):
            self.sink.write_item_content(rows)
            self.written += len(rows)


def default_embedder(settings: ItemConsumerSettings) -> ContentEmbedder:
    from learn_core.embedding.cache import CachedEmbedder, EmbeddingCache
    from learn_core.embedding.hf import HFEmbedder

    path = cache_dir() / "ceg-cache.sqlite" if settings.disk_cache else None
    return CachedEmbedder(HFEmbedder(), EmbeddingCache(settings.cache_entries, path))


def build_item_loop(
    bootstrap: str,
    sink: ItemContentSink,
    embedder: ContentEmbedder,
    *,
    settings: ItemConsumerSettings | None = None,
    kafka: Any | None = None,
    models: ModelSource | None = None,
    **consumer_overrides: Any,
) -> tuple[MicroBatchLoop, ItemHandler]:
    """Wire the item consumer: the one wiring of the CLI, the demo, the benches and tests.

    With ``models`` (the registry), ``sink`` (which must have a ``handle``) is wrapped in
    an ``ItemTowerSink``, so new items also get an item-tower vector from the current
    model at once, before any retraining (cold start); a model trained on another content
    model than ``embedder`` is refused.
    """
    from streaming.kafka_io import await_partitions, make_consumer, make_producer
    from streaming.settings import KafkaSettings
    from streaming.validate import limits_from_env

    s = settings or load(ItemConsumerSettings)
    k = kafka or load(KafkaSettings)
    consumer = make_consumer(
        bootstrap,
        [k.items_topic],
        s.group_id,
        auto_offset_reset=s.auto_offset_reset,
        **consumer_overrides,
    )
    await_partitions(consumer, k.items_topic)
    if models is not None:
        cache = ModelCache(models, expect_content=content_identity(embedder), follow_pending=True)
        sink = ItemTowerSink(sink, sink.handle, cache)  # type: ignore[attr-defined]
    handler = ItemHandler(embedder, sink)
    loop = MicroBatchLoop(
        consumer,
        make_producer(bootstrap),
        k.dlq_topic,
        handler,
        limits=limits_from_env(),
        expect=ITEM_CREATED,
        settings=s,
    )
    return loop, handler


def run_item_consumer(
    stop: threading.Event | None = None, idle_exit_s: float | None = None
) -> LoopStats:
    """The long-running service: ``learnrec consume items``."""
    from learn_core.serving import open_registry
    from streaming.kafka_io import prepare_kafka
    from streaming.sinks import open_sink

    s = load(ItemConsumerSettings)
    k, bootstrap = prepare_kafka()
    loop, handler = build_item_loop(
        bootstrap, open_sink(), default_embedder(s), settings=s, kafka=k, models=open_registry()
    )
    sink = handler.sink
    log.info("item consumer %s reading %s from %s", s.group_id, k.items_topic, bootstrap)
    try:
        return loop.run(stop, idle_exit_s=idle_exit_s)
    finally:
        close_loop(loop)
        sink.close()


def add_cli(sub: argparse._SubParsersAction) -> None:
    from streaming.service_cli import add_consumer_command

    add_consumer_command(
        sub,
        "consume-items",
        "run the item consumer (content embeddings -> Feast)",
        run_item_consumer,
    )
