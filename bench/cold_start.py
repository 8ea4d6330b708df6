"""Cold-start diagnostics on validation only: where LEARN's cold items lose, epoch by epoch.

    python -m bench.cold_start --dataset ml-100k --data ../shared/data/ml-100k --out FILE.json
    python -m bench.cold_start ... --set weight_decay=0.1 --set tower.dropout=0.1

Trains ``bench.quality``'s LEARN recipe (no time budget) on the *selection split*: a
further seeded 10% of warm items is held out of training and appears only as
validation targets, so cold-start choices never read the test. Reports, on validation:

- HR@10 for all users, users whose target is a held-out (cold) item, and the rest, at
  every epoch (does cold fall while warm climbs?);
- the same after score adjustments on the selected model: a popularity prior
  ``beta * log1p(training count)``, the same prior with cold items given their real
  count (an *oracle*: it reads interactions the model never saw, so it is a diagnosis of
  whether cold items lose on popularity, never a method), and a blend with the raw
  content-embedding similarity ``gamma * cos(mean of last 5 history items, item)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.cold_start")

BETAS = (0.01, 0.02, 0.04)
GAMMAS = (0.1, 0.25, 0.5, 1.0)


def slice_hr(ranks: np.ndarray, cold_users: np.ndarray, k: int = 10) -> dict[str, float | int]:
    """HR@k over users with a target, split by whether the target is a cold item."""
    ok = ~np.isnan(ranks)
    hit = ok & (np.nan_to_num(ranks, nan=np.inf) < k)
    cold, warm = ok & cold_users, ok & ~cold_users
    out: dict[str, float | int] = {
        "all": float(hit[ok].mean()) if ok.any() else float("nan"),
        "cold": float(hit[cold].mean()) if cold.any() else float("nan"),
        "warm": float(hit[warm].mean()) if warm.any() else float("nan"),
        "cold_hits": int(hit[cold].sum()),
        "n_cold": int(cold.sum()),
    }
    out["cold_over_warm"] = out["cold"] / out["warm"] if out["warm"] else float("nan")
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` (``tower.x`` / ``task.x`` for nested configs); values are JSON or text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> None:
    """Set fields on the LEARN config; an unknown name fails naming it."""
    for key, value in overrides.items():
        target, name = cfg, key
        if key.startswith("tower."):
            target, name = cfg.model.tower, key.removeprefix("tower.")
        elif key.startswith("task."):
            target, name = cfg.task, key.removeprefix("task.")
        if not hasattr(target, name):
            raise ValueError(f"--set {key}: no such setting")
        setattr(target, name, value)


def run(dataset: str, data: str | None, overrides: dict[str, Any], seed: int = 0) -> dict:
    import torch

    from bench.quality import learn_bench_config
    from learn_core.datasets import load_dataset
    from learn_core.embedding.hf import HFEmbedder
    from learn_core.models import FrozenContent
    from trainers.content_cache import content_matrix
    from trainers.evaluation import eval_loop
    from trainers.learn import learn_score_fn, train_learn
    from trainers.splits import hold_out_validation_cold, leave_one_out, validation_cold_users

    ds = load_dataset(dataset, data)
    split = leave_one_out(ds, cold_fraction=0.1, seed=seed)
    sel = hold_out_validation_cold(split, 0.1, seed=seed + 1)
    cold_users = validation_cold_users(sel, split)
    content = content_matrix(ds.items, HFEmbedder())
    inputs = FrozenContent(torch.from_numpy(content))
    cfg = learn_bench_config(inputs.dim, dataset, seed)
    cfg.time_budget_s = None  # the same epochs on any machine
    apply_overrides(cfg, overrides)

    curve: list[dict] = []

    def on_valid(epoch: int, ranks: np.ndarray) -> None:
        curve.append({"epoch": epoch} | slice_hr(ranks, cold_users))
        log.info("epoch %d valid HR@10 %s", epoch, curve[-1])

    t0 = time.monotonic()
    res = train_learn(cfg, sel, inputs, on_valid=on_valid)
    train_s = time.monotonic() - t0

    score = learn_score_fn(res.model, inputs, cfg.history_len)
    target_score = np.full(len(sel.users), np.nan)

    def recording(users: np.ndarray, hists: list[np.ndarray]) -> np.ndarray:
        out = score(users, hists)
        target_score[users] = out[np.arange(len(users)), sel.valid[users]]
        return out

    def hr_with(adjust: Callable[[list[np.ndarray]], np.ndarray]) -> dict:
        ranks = eval_loop(lambda u, h: score(u, h) + adjust(h), sel, "valid")
        return slice_hr(ranks, cold_users)

    counts = sel.train_counts().astype(np.float64)
    index = {iid: k for k, iid in enumerate(ds.item_ids)}
    full = np.bincount(ds.interactions["item_id"].map(index).to_numpy(), minlength=len(counts))
    prior = np.log1p(counts)
    oracle = np.where(counts == 0, np.log1p(full), prior)
    unit = content / np.linalg.norm(content, axis=1, keepdims=True)

    def content_sim(hists: list[np.ndarray]) -> np.ndarray:
        recent = np.stack([unit[h[-5:]].mean(0) for h in hists])
        return (recent / np.linalg.norm(recent, axis=1, keepdims=True)) @ unit.T

    valid = slice_hr(eval_loop(recording, sel, "valid"), cold_users)
    has = ~np.isnan(target_score)
    adjustments = (
        [{"kind": "none"} | valid]
        + [
            {"kind": "popularity_prior", "beta": b} | hr_with(lambda h, b=b: b * prior)
            for b in BETAS
        ]
        + [{"kind": "oracle_prior", "beta": b} | hr_with(lambda h, b=b: b * oracle) for b in BETAS]
        + [
            {"kind": "content_blend", "gamma": g} | hr_with(lambda h, g=g: g * content_sim(h))
            for g in GAMMAS
        ]
    )
    return {
        "dataset": ds.name,
        "split": "selection split: 10% test-cold items + 10% validation-cold items "
        "held out of training; validation targets only",
        "overrides": overrides,
        "best_epoch": res.best_epoch,
        "train_seconds": train_s,
        "valid": valid,
        "curve": curve,
        "adjustments": adjustments,
        "target_score_mean": {
            "cold": float(target_score[has & cold_users].mean()),
            "warm": float(target_score[has & ~cold_users].mean()),
        },
    }


def markdown(report: dict) -> str:
    v = report["valid"]
    lines = [
        f"{report['dataset']} (validation, selection split), overrides {report['overrides']}: "
        f"best epoch {report['best_epoch']}, HR@10 all {v['all']:.4f}, cold {v['cold']:.4f} "
        f"({v['cold_hits']} of {v['n_cold']}), warm {v['warm']:.4f}, "
        f"cold / warm {v['cold_over_warm']:.2f}",
        "",
        "| adjustment | all | cold | warm | cold / warm |",
        "|---|---:|---:|---:|---:|",
    ]
    for a in report["adjustments"]:
        knob = next((f"{k} {a[k]}" for k in ("beta", "gamma") if k in a), "")
        lines.append(
            f"| {a['kind']} {knob}".rstrip()
            + f" | {a['all']:.4f} | {a['cold']:.4f} | {a['warm']:.4f} "
            f"| {a['cold_over_warm']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="LEARN cold-start diagnostics (module docstring)")
    ap.add_argument("--dataset", required=True, choices=["ml-100k", "ml-1m-subset", "sample"])
    ap.add_argument("--data", default=None, help="data directory (MovieLens)")
    ap.add_argument("--out", type=Path, required=True, help="report JSON; .md goes next to it")
    ap.add_argument("--set", action="append", default=[], help="recipe override key=value")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    report = run(args.dataset, args.data, parse_overrides(args.set), args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    md = markdown(report)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
