"""CEG pipeline benchmark: the content model alone vs the whole streaming path, in one process.

    python -m bench.ceg_pipeline --out FILE.json [--items 2000] [--profile embedded]

Run 1 embeds N distinct item texts with the model alone (batches of the consumer's
size). Run 2 sends the same N items as events through Kafka and times the item
consumer from its first poll until every item is written to the Feast online and
offline stores, with an empty embedding cache (so the model does the same work).
The ratio ``pipeline_items_per_s / model_items_per_s`` is the overhead of the
platform; the target is >= 0.8.

Starts the local broker when ``KAFKA_BOOTSTRAP_SERVERS`` is unset, and uses a
throwaway Feast data directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
import uuid
from pathlib import Path

log = logging.getLogger("bench.ceg_pipeline")


def _items(n: int) -> list:
    """N items with distinct texts, built from the sample catalogue."""
    from learn_core.datasets import load_dataset

    base = load_dataset("sample").items
    out = []
    for k in range(n):
        it = base[k % len(base)]
        out.append(
            it.model_copy(update={"item_id": f"{it.item_id}-v{k}", "title": f"{it.title} (v{k})"})
        )
    return out


def run(n_items: int, batch: int, profile: str, out: Path | None, bootstrap: str) -> dict:
    import os

    from learn_core.embedding.cache import CachedEmbedder, EmbeddingCache
    from learn_core.embedding.hf import HFEmbedder
    from learn_core.events import to_json_bytes
    from learn_core.item_text import render_item
    from streaming.admin import create_topics, delete_topics
    from streaming.item_consumer import ItemConsumerSettings, build_item_loop, close_loop
    from streaming.kafka_io import make_producer
    from streaming.settings import KafkaSettings
    from streaming.sinks import open_sink

    items = _items(n_items)
    texts = [render_item(i) for i in items]
    model = HFEmbedder()
    model.embed(texts[:32])  # warm-up outside both timings

    t0 = time.perf_counter()
    for s in range(0, len(texts), batch):
        model.embed(texts[s : s + batch])
    model_s = time.perf_counter() - t0
    model_rate = n_items / model_s
    log.info("model alone: %d items in %.1fs = %.1f items/s", n_items, model_s, model_rate)

    tag = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(
        items_topic=f"bench-items-{tag}",
        interactions_topic=f"bench-inter-{tag}",
        dlq_topic=f"bench-dlq-{tag}",
    )
    create_topics(bootstrap, [kafka.items_topic], partitions=4)
    create_topics(bootstrap, [kafka.dlq_topic], partitions=1)
    producer = make_producer(bootstrap)
    for it in items:
        producer.send(kafka.items_topic, key=it.item_id.encode(), value=to_json_bytes(it))
    producer.flush()
    producer.close()

    with tempfile.TemporaryDirectory(prefix="bench-feast-") as d:
        os.environ["LEARNREC_FEAST_DATA_DIR"] = d
        os.environ["LEARNREC_FEAST_PROFILE"] = profile
        os.environ["LEARNREC_FEAST_PROJECT"] = f"bench{tag}"
        sink = open_sink()
        embedder = CachedEmbedder(model, EmbeddingCache(max_entries=10 * n_items))
        settings = ItemConsumerSettings(group_id=f"bench-{tag}", max_batch=batch, disk_cache=False)
        loop, handler = build_item_loop(bootstrap, sink, embedder, settings=settings, kafka=kafka)
        _join_group(loop.consumer)
        t0 = time.perf_counter()
        while handler.written < n_items:
            loop.step()
            if time.perf_counter() - t0 > 1800:
                raise TimeoutError(f"pipeline wrote {handler.written}/{n_items} in 30 min")
        pipe_s = time.perf_counter() - t0
        close_loop(loop)
        stored = sink.read_item_content([it.item_id for it in items[:50]])
        sink.close()
    delete_topics(bootstrap, [kafka.items_topic, kafka.dlq_topic])
    pipe_rate = n_items / pipe_s
    if len(stored) != 50:
        raise RuntimeError(f"read back {len(stored)} of 50 items from the online store")
    result = {
        "items": n_items,
        "batch": batch,
        "profile": profile,
        "model_id": model.model_id,
        "device": str(model.device),
        "model_items_per_s": round(model_rate, 2),
        "pipeline_items_per_s": round(pipe_rate, 2),
        "pipeline_over_model": round(pipe_rate / model_rate, 3),
        "model_seconds": round(model_s, 2),
        "pipeline_seconds": round(pipe_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "target_ratio": 0.8,
    }
    print(json.dumps(result, indent=2))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


def _join_group(consumer) -> None:  # noqa: ANN001 - kafka-python consumer
    """Join the group before timing, then rewind: the one-off rebalance is not throughput."""
    deadline = time.monotonic() + 60
    while not consumer.assignment():
        consumer.poll(timeout_ms=200, max_records=1)
        if time.monotonic() > deadline:
            raise TimeoutError("consumer got no partitions in 60 s")
    consumer.seek_to_beginning(*consumer.assignment())


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--profile", default="embedded", choices=["embedded", "production"])
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("kafka", "feast"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from devstack.kafka import owned_kafka

    with owned_kafka() as bootstrap:  # KAFKA_BOOTSTRAP_SERVERS, else a throwaway broker
        run(a.items, a.batch, a.profile, a.out, bootstrap)


if __name__ == "__main__":
    main()
