"""Streaming benchmark: interactions -> user embeddings readable in the online store.

    python -m bench.streaming --out streaming.json [--dataset ml-1m-subset --data-path DIR]

Three phases against the real broker (the local one is started when
``KAFKA_BOOTSTRAP_SERVERS`` is unset) and the Feast profile from ``LEARNREC_FEAST_*``
(embedded by default, in a temporary data dir):

1. **read-only**: a kafka-python consumer reads the pre-produced topic and discards it
   (``read_only_events_per_s``);
2. **throughput**: the interaction consumer (default user tower, H=50) turns the same
   topic into user embeddings written online and offline (``events_per_s``, counted
   from the first record to the last write);
3. **freshness**: a producer thread replays at ``--fresh-rate`` events/s for
   ``--fresh-seconds`` while the consumer runs; freshness is the time from the
   record's produce timestamp to the online write having returned (the row is
   readable then), per event whose user was embedded.

Content vectors are seeded random unit vectors written to the online store (the
consumer's cost does not depend on their values; the CEG has its own benchmark).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import resource
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.schema import ITEM_CONTENT

log = logging.getLogger("bench.streaming")


def _content(handle: Any, item_ids: list[str], dim: int) -> None:
    v = np.random.default_rng(0).standard_normal((len(item_ids), dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for i in range(0, len(item_ids), 2000):
        handle.write_online(
            ITEM_CONTENT.name,
            pd.DataFrame(
                {
                    "item_id": item_ids[i : i + 2000],
                    "embedding": list(v[i : i + 2000]),
                    "model_version": "bench-random",
                    "event_timestamp": pd.Timestamp("2000-01-01", tz="UTC"),
                }
            ),
        )


def read_only_rate(
    bootstrap: str, topic: str, n: int, max_records: int, timeout_s: float = 600
) -> float:
    """Events/s of a kafka-python consumer that reads ``n`` records and discards them.

    Polls like the interaction consumer (same consumer settings, ``max_records`` and poll
    timeout), and its clock starts the same way: at the start of the first poll that
    returns records.
    """
    from streaming.consumer import ConsumerSettings
    from streaming.kafka_io import await_partitions, make_consumer

    poll_ms = ConsumerSettings().poll_timeout_ms
    c = make_consumer(bootstrap, [topic], f"bench-ro-{uuid.uuid4().hex[:8]}")
    await_partitions(c, topic)
    got, t0 = 0, None
    deadline = time.monotonic() + timeout_s
    try:
        while got < n and time.monotonic() < deadline:
            before = time.monotonic()
            batch = c.poll(timeout_ms=poll_ms, max_records=max_records)
            k = sum(len(v) for v in batch.values())
            if k and t0 is None:
                t0 = before
            got += k
    finally:
        c.close()
    assert t0 is not None and got >= n, f"read {got}/{n}"
    return n / (time.monotonic() - t0)


def _consumer(bootstrap: str, k: Any, handle: Any, history: Any, group: str, max_batch: int):
    from streaming.interaction_consumer import (
        InteractionConsumerSettings,
        build_interaction_loop,
        default_towers,
    )
    from streaming.user_sinks import FeastUserSink

    s = InteractionConsumerSettings(group_id=group, history_len=50, max_batch=max_batch)
    return build_interaction_loop(
        bootstrap, FeastUserSink(handle), history, default_towers(), settings=s, kafka=k
    )


def run(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    """The three phases on the broker at ``bootstrap``."""
    from feature_repo.settings import FeastSettings
    from feature_repo.store import open_store
    from learn_core.datasets import load_dataset
    from learn_core.settings import load
    from streaming.admin import create_topics
    from streaming.item_consumer import close_loop
    from streaming.producer import EventProducer
    from streaming.replay import replay
    from streaming.settings import KafkaSettings
    from streaming.user_sinks import open_history_store

    ds = load_dataset(args.dataset, args.data_path)
    n = min(args.limit, len(ds.interactions))
    base = load(KafkaSettings)
    tag = uuid.uuid4().hex[:8]
    k = base.model_copy(
        update=dict(
            interactions_topic=f"bench-inter-{tag}",
            items_topic=f"bench-items-{tag}",
            dlq_topic=f"bench-dlq-{tag}",
        )
    )
    # Replayed records keep their historical timestamps: keep them past time retention.
    keep = {"retention.ms": "-1"}
    create_topics(bootstrap, [k.interactions_topic], partitions=args.partitions, configs=keep)
    create_topics(bootstrap, [k.items_topic, k.dlq_topic], partitions=1)
    data_dir = Path(tempfile.mkdtemp(prefix="learnrec-bench-"))
    fs = load(FeastSettings, project=f"bench_{tag}", data_dir=data_dir)
    handle = open_store(fs)
    history = open_history_store(handle)
    _content(handle, ds.item_ids, 384)

    log.info("producing %d interactions to %s", n, k.interactions_topic)
    with EventProducer(bootstrap, k) as producer:
        replay(ds, producer, items=False, limit=n)

    # The consumer freezes the process's long-lived objects out of the garbage collector
    # (build_interaction_loop); do it here too so that both consumers run on equal terms.
    gc.freeze()
    load_before = os.getloadavg()
    ro = read_only_rate(bootstrap, k.interactions_topic, n, args.max_batch)
    log.info("read-only: %.0f events/s", ro)

    loop, handler = _consumer(bootstrap, k, handle, history, f"bench-{tag}", args.max_batch)
    t0: float | None = None
    deadline = time.monotonic() + args.timeout
    try:
        while handler.stats.events < n and time.monotonic() < deadline:
            before = time.monotonic()
            if loop.step() and t0 is None:
                t0 = before  # the clock includes the first batch's poll and processing
        elapsed = time.monotonic() - (t0 or time.monotonic())
    finally:
        close_loop(loop)
    assert handler.stats.events >= n, f"consumer handled {handler.stats.events}/{n}"
    eps = n / elapsed
    log.info("consumer: %.0f events/s (%d users written)", eps, handler.stats.users_written)

    fresh = freshness(bootstrap, k, handle, history, ds, args)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "dataset": ds.name,
        "events": n,
        "history_len": 50,
        "partitions": args.partitions,
        "max_batch": args.max_batch,
        "profile": fs.profile,
        "model_version": handler.model.version if handler.model else None,
        "events_per_s": round(eps, 1),
        "read_only_events_per_s": round(ro, 1),
        "ratio_to_read_only": round(eps / ro, 3),
        "users_written": handler.stats.users_written,
        **fresh,
        "peak_rss_mb": round(rss, 1),
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "cpu_count": _cpus(),
        "machine": platform.platform(),
        "note": "2 shared cores; producer, broker and consumer on the same machine",
    }
    history.close()
    handle.close()
    from streaming.admin import delete_topics

    delete_topics(bootstrap, [k.interactions_topic, f"{k.interactions_topic}-fresh", k.dlq_topic])
    delete_topics(bootstrap, [k.items_topic])
    shutil.rmtree(data_dir, ignore_errors=True)  # the temporary Feast store
    return out


def freshness(
    bootstrap: str, k: Any, handle: Any, history: Any, ds: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """Replay at a fixed rate (restamped to now) while the consumer runs; percentiles."""
    from streaming.admin import create_topics
    from streaming.item_consumer import close_loop
    from streaming.producer import EventProducer
    from streaming.replay import replay

    n = int(args.fresh_rate * args.fresh_seconds)
    if n <= 0:
        return {}
    kf = k.model_copy(update=dict(interactions_topic=f"{k.interactions_topic}-fresh"))
    create_topics(bootstrap, [kf.interactions_topic], partitions=args.partitions)
    # Offset the event ids so that the window changes for every event (no dedup hits).
    df = ds.interactions.iloc[:n].copy()
    df["event_id"] = "f-" + df["event_id"].astype(str)
    fds = type(ds)(ds.name, ds.items, df)
    loop, handler = _consumer(
        bootstrap, kf, handle, history, f"bench-f-{uuid.uuid4().hex[:6]}", 2000
    )
    loop.step()  # join the group before the clock starts
    sent: dict[str, float] = {}

    def produce() -> None:
        with EventProducer(bootstrap, kf) as producer:
            st = replay(fds, producer, items=False, rate=args.fresh_rate, restamp=True)
            sent["rate"] = st.events_per_s

    th = threading.Thread(target=produce, daemon=True)
    th.start()
    deadline = time.monotonic() + args.fresh_seconds + 60
    try:
        while handler.stats.events < n and time.monotonic() < deadline:
            loop.step()
    finally:
        close_loop(loop)
    th.join(timeout=30)
    f = np.asarray(handler.stats.freshness_s) * 1000
    return {
        "fresh_target_rate": args.fresh_rate,
        "fresh_achieved_produce_rate": round(sent.get("rate", 0.0), 1),
        "fresh_seconds": args.fresh_seconds,
        "fresh_events": handler.stats.events,
        "fresh_samples": int(f.size),
        "freshness_p50_ms": round(float(np.percentile(f, 50)), 1) if f.size else None,
        "freshness_p99_ms": round(float(np.percentile(f, 99)), 1) if f.size else None,
        "freshness_max_ms": round(float(f.max()), 1) if f.size else None,
    }


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dataset", default="sample", help="sample | ml-100k | ml-1m-subset")
    p.add_argument("--data-path", default=None, help="MovieLens directory (read by path)")
    p.add_argument("--limit", type=int, default=100_000, help="interactions to stream")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=10_000)
    p.add_argument("--fresh-rate", type=float, default=1000.0)
    p.add_argument("--fresh-seconds", type=float, default=60.0)
    p.add_argument("--timeout", type=float, default=900.0)
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("kafka", "feast"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from devstack.kafka import owned_kafka

    with owned_kafka() as bootstrap:  # KAFKA_BOOTSTRAP_SERVERS, else a throwaway broker
        result = run(args, bootstrap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
