"""``learnrec demo``: the whole loop on one machine, with a short report at the end.

Steps: start Kafka from jars (or use ``KAFKA_BOOTSTRAP_SERVERS``) and an embedded Feast
store in a fresh data dir; replay the data set (the built-in sample, or MovieLens with
``--data PATH``) through both consumers; train, evaluate and promote the first model
and backfill its embeddings; start the ranking reader; then print event counts, HR@10
against popularity, freshness p50/p99 and throughput, and write an HTML report with
plots. Both consumers run on threads (``learnrec.pipeline.Pipeline``).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- demo


@dataclass
class DemoResult:
    dataset: str
    items: int
    interactions: int
    replay_events_per_s: float
    consume_seconds: float
    consume_events_per_s: float
    freshness_p50_ms: float | None  # None: no user was embedded on arrival (all held)
    freshness_p99_ms: float | None
    freshness_samples: int
    retrain: dict[str, Any]
    model_version: str | None
    rank_p50_ms: float
    rank_p99_ms: float
    example: dict[str, Any]
    seconds: dict[str, float]


def run_demo(
    data: Path | None,
    out_dir: Path,
    *,
    limit: int | None = None,
    epochs: int | None = None,
    bootstrap: str,
) -> DemoResult:
    """Everything ``learnrec demo`` does on the broker at ``bootstrap``; returns the figures."""
    import torch

    from feature_repo.settings import FeastSettings
    from feature_repo.store import open_store
    from learn_core.datasets import load_dataset
    from learn_core.embedding.cache import CachedEmbedder, EmbeddingCache
    from learn_core.embedding.hf import HFEmbedder
    from learn_core.runtime import limit_threads
    from learn_core.settings import cache_dir, load
    from learnrec.pipeline import Pipeline
    from ranking.reader import RankingReader
    from ranking.settings import RankingSettings
    from streaming.kafka_io import ensure_event_topics
    from streaming.producer import EventProducer
    from streaming.replay import replay
    from streaming.settings import KafkaSettings
    from trainers.jobs.retrain import RetrainSettings, retrain

    torch.set_num_threads(2)
    secs: dict[str, float] = {}
    t0 = time.monotonic()
    run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)

    if data is None:
        ds = load_dataset("sample")
    else:
        name = "ml-100k" if (data / "u.data").exists() else "ml-1m-subset"
        ds = load_dataset(name, data)
    n_inter = len(ds.interactions) if limit is None else min(limit, len(ds.interactions))
    print(f"[1/6] data set {ds.name}: {len(ds.items)} items, {n_inter} interactions")

    base = load(KafkaSettings)
    tag = f"demo-{run_id}"
    k = base.model_copy(
        update={
            "bootstrap_servers": bootstrap,
            "items_topic": f"{tag}.items",
            "interactions_topic": f"{tag}.interactions",
            "dlq_topic": f"{tag}.dlq",
        }
    )
    ensure_event_topics(bootstrap, k)
    feast = load(
        FeastSettings,
        profile="embedded",
        project="demo",
        data_dir=cache_dir() / "demo" / run_id / "feast",
    )
    registry = _registry(cache_dir() / "demo" / run_id / "models")
    secs["start_stack"] = time.monotonic() - t0
    print(f"[2/6] Kafka at {bootstrap}; Feast (embedded) in {feast.resolved_data_dir()}")

    embedder = CachedEmbedder(
        HFEmbedder(), EmbeddingCache(200_000, cache_dir() / "ceg-cache.sqlite")
    )
    pipe = Pipeline(bootstrap, k, feast, registry, embedder, group_prefix=tag)
    pipe.start()
    try:
        t1 = time.monotonic()
        # The catalogue first, then the interactions once every item has its content
        # embedding: interactions on items without content are held (not embedded), and
        # freshness is only measured for users embedded when their event arrives.
        with EventProducer(bootstrap, k) as producer:
            istats = replay(ds, producer, interactions=False, progress=True)
            pipe.wait_for(len(ds.items), 0, timeout_s=1200)
            rstats = replay(ds, producer, limit=limit, items=False, progress=True)
        rstats.items, rstats.seconds = istats.items, istats.seconds + rstats.seconds
        pipe.wait_for(len(ds.items), n_inter, timeout_s=1200)
        secs["replay_and_consume"] = time.monotonic() - t1
        print(f"[3/6] consumed {len(ds.items)} items and {n_inter} interactions")

        t2 = time.monotonic()
        handle = open_store(feast)
        s = load(RetrainSettings, catchup_delay_s=1.0, **({"epochs": epochs} if epochs else {}))
        report = retrain(handle, registry, s, progress=True, force=True)
        secs["train_backfill"] = time.monotonic() - t2
        if report is None:
            raise RuntimeError("too few interactions to train on")
        print(
            f"[4/6] trained (recipe {report.recipe.get('name')}), backfilled and promoted "
            f"{report.version}"
        )

        rs = load(RankingSettings)
        limit_threads(rs.blas_threads, rs.torch_threads)  # as `learnrec serve` at start-up
        reader = RankingReader(handle, registry, rs)
        reader.start()
        users = sorted(set(ds.interactions["user_id"].iloc[:n_inter]))[:50]
        items = [it.item_id for it in ds.items]
        rng = np.random.default_rng(0)
        lat = []
        for n in range(300):
            u = users[n % len(users)]
            cands = list(rng.choice(items, size=min(100, len(items)), replace=False))
            tq = time.perf_counter()
            reader.rank(u, cands)
            lat.append(time.perf_counter() - tq)
        example = reader.retrieve(users[0], 10).to_dict()
        reader.close()
        handle.close()
        print(f"[5/6] ranking reader serves {report.version}")
    finally:
        pipe.close()

    inter = pipe.interaction_handler
    fresh = np.asarray(inter.stats.freshness_s if inter else [], np.float64) * 1000
    consumed = len(ds.items) + n_inter
    res = DemoResult(
        dataset=ds.name,
        items=len(ds.items),
        interactions=n_inter,
        replay_events_per_s=rstats.events_per_s,
        consume_seconds=secs["replay_and_consume"],
        consume_events_per_s=consumed / secs["replay_and_consume"],
        freshness_p50_ms=float(np.percentile(fresh, 50)) if len(fresh) else None,
        freshness_p99_ms=float(np.percentile(fresh, 99)) if len(fresh) else None,
        freshness_samples=len(fresh),
        retrain=_jsonable(report),
        model_version=report.version,
        rank_p50_ms=float(np.percentile(lat, 50) * 1000),
        rank_p99_ms=float(np.percentile(lat, 99) * 1000),
        example=example,
        seconds=secs | {"total": time.monotonic() - t0},
    )
    (out_dir / "demo.json").write_text(json.dumps(_jsonable(res), indent=2, default=str))
    write_html(res, fresh, np.asarray(lat) * 1000, out_dir / "demo.html")
    print("[6/6] report written")
    return res


def _registry(root: Path) -> Any:
    """A fresh model registry for this demo run (``learn_core.registry``)."""
    from learn_core.registry import ModelRegistry

    return ModelRegistry(root)


def _jsonable(obj: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else obj


def _freshness(r: DemoResult) -> str:
    if r.freshness_p50_ms is None or r.freshness_p99_ms is None:
        return "n/a (no user was embedded on arrival: every interaction waited for content)"
    return (
        f"p50 {r.freshness_p50_ms:.0f} ms, p99 {r.freshness_p99_ms:.0f} ms "
        f"({r.freshness_samples:,} events)"
    )


def _decision(reason: str) -> str:
    """The retrain decision in words a first-time user reads right."""
    if reason == "no current model":
        return "promoted: the first model, nothing to compare it with"
    return reason


def summary_lines(r: DemoResult) -> list[str]:
    rt = r.retrain
    cand, pop = rt["candidate"], rt["popularity"]
    return [
        f"data set            {r.dataset}: {r.items} item events, {r.interactions} interaction events",
        f"throughput          replay {r.replay_events_per_s:,.0f} ev/s; consumed all in "
        f"{r.consume_seconds:.1f}s ({r.consume_events_per_s:,.0f} ev/s end to end)",
        f"freshness           event -> user embedding readable: {_freshness(r)}",
        f"HR@10 (held out)    LEARN {cand['hr@10']:.4f} vs popularity {pop['hr@10']:.4f} "
        f"on {rt['eval_users']} users (newest interactions after {rt['cutoff'][:19]})",
        f"model               {r.model_version} ({_decision(rt['reason'])})",
        f"ranking reader      1 user x 100 candidates: p50 {r.rank_p50_ms:.1f} ms, "
        f"p99 {r.rank_p99_ms:.1f} ms",
        f"wall time           {r.seconds['total']:.0f}s",
    ]


def write_html(r: DemoResult, fresh_ms: np.ndarray, rank_ms: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(fig: Any) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        return base64.b64encode(buf.getvalue()).decode()

    figs = []
    fig, ax = plt.subplots(figsize=(5, 3))
    names = ["LEARN", "popularity"]
    vals = [r.retrain["candidate"]["hr@10"], r.retrain["popularity"]["hr@10"]]
    ax.bar(names, vals, color=["#3b6", "#999"])
    ax.set_ylabel("HR@10 (held-out window)")
    figs.append(("Quality", png(fig)))
    if len(fresh_ms):
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(fresh_ms, bins=50, color="#36b")
        ax.set_xlabel("event -> user embedding readable (ms)")
        figs.append(("Freshness", png(fig)))
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(rank_ms, bins=50, color="#b63")
    ax.set_xlabel("rank request latency (ms), 1 user x 100 candidates")
    figs.append(("Ranking latency", png(fig)))
    stages = r.seconds
    fig, ax = plt.subplots(figsize=(5, 3))
    keys = [k for k in stages if k != "total"]
    ax.barh(keys, [stages[k] for k in keys], color="#777")
    ax.set_xlabel("seconds")
    figs.append(("Where the time went", png(fig)))
    rows = "".join(f"<li><code>{line}</code></li>" for line in summary_lines(r))
    imgs = "".join(f"<h2>{t}</h2><img src='data:image/png;base64,{b}' alt='{t}'>" for t, b in figs)
    example = json.dumps(r.example, indent=1)[:3000]
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>learnrec demo</title>"
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}</style>"
        f"<h1>learnrec demo: {r.dataset}</h1><ul>{rows}</ul>{imgs}"
        f"<h2>Example retrieval</h2><pre>{example}</pre>"
    )


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="start the local stack and run the main job end to end")
    p.add_argument("--data", type=Path, default=None, help="MovieLens dir (default: the sample)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="report directory")
    p.add_argument("--limit", type=int, default=None, help="replay only this many interactions")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default setting)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    from devstack.kafka import owned_kafka

    # KAFKA_BOOTSTRAP_SERVERS, else a broker of the demo's own, shut down when it ends.
    with owned_kafka() as bootstrap:
        res = run_demo(
            args.data, args.out, limit=args.limit, epochs=args.epochs, bootstrap=bootstrap
        )
    print()
    for line in summary_lines(res):
        print(line)
    print(f"\nreport: {args.out / 'demo.html'}  (figures: {args.out / 'demo.json'})")
    return 0
