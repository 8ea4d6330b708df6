"""Streaming benchmark: interactions -> user embeddings readable in the online store.

    python -m bench.streaming --out streaming.json [--dataset ml-1m-subset --data-path DIR]

Phases against the real broker (the local one is started when
``KAFKA_BOOTSTRAP_SERVERS`` is unset) and the Feast profile from ``LEARNREC_FEAST_*``
(embedded by default, in a temporary data dir):

1. **read-only**: a kafka-python consumer reads the pre-produced topic and discards it
   (``read_only_events_per_s``);
2. **throughput**: the interaction consumer (default user tower, H=50) turns the same
   topic into user embeddings written online and offline (``events_per_s``, counted
   from the first record to the last write);
3. **replicas** (``--replicas 1,2``): the same events on a fresh topic and store,
   consumed by that many interaction-consumer *processes* of one group
   (``bench.streaming_procs``), timed from the first record to the last write of any
   of them; beside the in-process run, so the ratio to read-only is comparable;
4. **freshness** (``--fresh-rates 1000,5000``): a producer process replays at each
   rate for ``--fresh-seconds`` (the data set cycled with fresh event ids) while the
   consumer runs; freshness is the time from the record's produce timestamp to the
   online write having returned (the row is readable then), per event whose user was
   embedded.

Both consumers check every record batch's CRC-32C (kafka-python's default); the JSON
says which implementation did it (``crc32c``: C when the ``crc32c`` package is
installed, as the ``kafka`` extra does).

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
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.streaming_procs import replica_rate
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

    reps = []
    for r in args.replicas if args.replicas != [1] else []:
        before = _load()
        got = replica_rate(bootstrap, ds, n, r, tag, args)
        got["ratio_to_read_only"] = round(got["events_per_s"] / ro, 3)
        reps.append({**got, "load_average_1m_before_after": [before, _load()]})
    fresh = [
        freshness(bootstrap, k, handle, history, rate, ds.item_ids, args)
        for rate in args.fresh_rates
    ]
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
        "replica_runs": reps,
        **(fresh[0] if fresh else {}),  # the first rate's figures at the top level, as before
        "freshness_runs": fresh,
        "peak_rss_mb": round(rss, 1),
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "cpu_count": _cpus(),
        "crc32c": _crc32c_impl(),
        "machine": platform.platform(),
        "note": "2 shared cores; producer, broker and consumer on the same machine",
    }
    history.close()
    handle.close()
    from feature_repo.store import forget_project
    from streaming.admin import delete_topics

    forget_project(fs)  # production: its registry rows would slow every later store

    delete_topics(bootstrap, [k.interactions_topic, k.dlq_topic])
    delete_topics(bootstrap, [k.items_topic])
    shutil.rmtree(data_dir, ignore_errors=True)  # the temporary Feast store
    return out


def freshness(
    bootstrap: str,
    k: Any,
    handle: Any,
    history: Any,
    rate: float,
    item_ids: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Replay at ``rate`` (restamped to now) from a producer process while the consumer runs.

    The consumer is warmed first (group joined, model loaded, content cache filled), as a
    long-running one is: the figure is the steady state, not a restart's first seconds.
    """
    from bench.streaming_procs import Child, child_env
    from streaming.admin import create_topics, delete_topics
    from streaming.item_consumer import close_loop

    n = int(rate * args.fresh_seconds)
    if n <= 0:
        return {}
    topic = f"{k.interactions_topic}-fresh{int(rate)}"
    kf = k.model_copy(update=dict(interactions_topic=topic))
    create_topics(bootstrap, [topic], partitions=args.partitions)
    cmd = ["producer", "--topic", topic, "--rate", str(rate), "--seconds", str(args.fresh_seconds)]
    cmd += ["--dataset", args.dataset] + (["--data-path", args.data_path] if args.data_path else [])
    producer = Child(cmd, child_env(bootstrap))
    loop, handler = _consumer(
        bootstrap, kf, handle, history, f"bench-f-{uuid.uuid4().hex[:6]}", args.max_batch
    )
    try:
        join_by = time.monotonic() + 30
        while not loop.assignment and time.monotonic() < join_by:
            loop.step()  # join the group before the clock starts
        handler.reload_model(force=True)
        handler.content.get_many(item_ids)
        producer.read()  # ready: data set loaded, connected
        producer.go()
        deadline = time.monotonic() + args.fresh_seconds + 60
        while handler.stats.events < n and time.monotonic() < deadline:
            loop.step()
        sent = producer.read()
    finally:
        close_loop(loop)
        producer.close()
        delete_topics(bootstrap, [topic])
    f = np.asarray(handler.stats.freshness_s) * 1000
    return {
        "fresh_target_rate": rate,
        "fresh_achieved_produce_rate": round(sent.get("rate", 0.0), 1),
        "fresh_seconds": args.fresh_seconds,
        "fresh_events": handler.stats.events,
        "fresh_samples": int(f.size),
        "freshness_p50_ms": round(float(np.percentile(f, 50)), 1) if f.size else None,
        "freshness_p99_ms": round(float(np.percentile(f, 99)), 1) if f.size else None,
        "freshness_max_ms": round(float(f.max()), 1) if f.size else None,
        # p99 per 10 s of the replay (events in write order, ~rate per second): says
        # whether a bad p99 is one stall, the warm-up, or the whole run
        "freshness_p99_ms_per_10s": [
            round(float(np.percentile(w, 99)), 1)
            for w in np.array_split(f, max(1, n // max(1, int(10 * rate))))
            if w.size
        ],
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _crc32c_impl() -> str:
    """Which CRC-32C kafka-python checks fetched batches with (both consumers use it)."""
    from kafka.record import util

    return "python" if util._crc32c is util.crc32c_py else f"C ({util._crc32c.__module__})"


def _rates(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dataset", default="sample", help="sample | ml-100k | ml-1m-subset")
    p.add_argument("--data-path", default=None, help="MovieLens directory (read by path)")
    p.add_argument("--limit", type=int, default=100_000, help="interactions to stream")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=10_000)
    p.add_argument(
        "--fresh-rates",
        type=_rates,
        default=[1000.0],
        help="comma list of events/s for freshness runs, e.g. 1000,5000 (default 1000)",
    )
    p.add_argument("--fresh-seconds", type=float, default=60.0, help="length of each one")
    p.add_argument(
        "--replicas",
        type=_ints,
        default=[1],
        help="comma list of consumer process counts, e.g. 1,2: each runs as that many "
        "processes of one group on a fresh topic and store (default 1: only the in-process run)",
    )
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
