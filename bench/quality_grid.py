"""One validation-only grid point of ``bench.quality``'s models: never reads a test target.

    python -m bench.quality_grid --dataset ml-100k --data ../shared/data/ml-100k \
        --model sasrec_ce --set d=128 --out grid.jsonl
    python -m bench.quality_grid ... --model learn --set task.negatives=catalogue \
        --set task.temperature=0.1 --out grid.jsonl

Trains ``--model`` (``learn``, ``learn_hybrid``, ``learn_id`` or ``sasrec_ce``) with the
benchmark's settings plus the ``--set key=value`` overrides on the ordinary split
(``leave_one_out(cold_fraction=0.1)``), no time budget unless ``--set
time_budget_s=...``, and appends one JSON line to ``--out``: the overrides, the best
validation HR@10 / NDCG@10 (the early-stopping criterion), the best epoch, the epochs
run, the training seconds and the 1-minute load average before and after. This is how
the benchmark's settings are chosen (docs/quality.md), so the test split stays unread
until the final run. LEARN keys: ``recipe.x`` replaces a field of the model's named
``Recipe`` before anything is built (``recipe.history_len=200`` also sizes the
positions, ``recipe.temperature``, ``recipe.negatives``, ``recipe.id_dropout``); then
as ``bench.cold_start`` (``lr``, ``tower.x``, ``task.x``), plus ``inputs.id_dropout``
for the hybrid; SASRec+CE keys are ``SASRecTrainConfig`` fields.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.cold_start import apply_overrides, parse_overrides

log = logging.getLogger("bench.quality_grid")

#: ``ordinary``: bench.quality's split (validation targets all warm); ``selection``: a
#: further 10% of the warm items held out of training so that about 10% of the validation
#: targets are cold, as on test (``trainers.splits.hold_out_validation_cold``).
SPLITS = {
    "ordinary": "ordinary leave-one-out split, validation targets only",
    "selection": "cold-holdout selection split (hold_out_validation_cold, seed + 1), "
    "validation targets only",
}
GRID_MODELS = ("product", "learn", "learn_hybrid", "learn_id", "sasrec_ce")


def apply_sasrec_overrides(cfg: Any, overrides: dict[str, Any]) -> None:
    """Set ``SASRecTrainConfig`` fields; an unknown name fails naming it."""
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise ValueError(f"--set {key}: no such SASRec setting")
        setattr(cfg, key, value)


def apply_recipe_overrides(recipe: Any, overrides: dict[str, Any]) -> Any:
    """The recipe (``Recipe`` or ``AnchoredRecipe``) with the ``recipe.x`` overrides set;
    an unknown field fails naming it."""
    known = {f.name for f in fields(recipe)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        name = key.removeprefix("recipe.")
        if name not in known or name == "name":
            raise ValueError(f"--set {key}: no such recipe field")
        changes[name] = value
    return replace(recipe, **changes) if changes else recipe


def run(
    dataset: str,
    data: str | None,
    model: str,
    overrides: dict[str, Any],
    seed: int = 0,
    split_name: str = "ordinary",
    quick: bool = False,
) -> dict[str, Any]:
    import torch

    from bench.quality import (
        BENCH_RECIPES,
        learn_recipe,
        load_bench_dataset,
        sasrec_ce_bench_config,
    )
    from learn_core.embedding.hf import HFEmbedder
    from trainers.content_cache import content_matrix
    from trainers.evaluation import eval_loop
    from trainers.learn import learn_score_fn, train_learn
    from trainers.metrics import ranking_metrics
    from trainers.recipe import PRODUCT_RECIPE
    from trainers.sasrec import sasrec_score_fn, train_sasrec
    from trainers.splits import hold_out_validation_cold, leave_one_out, validation_cold_users

    if model not in GRID_MODELS:
        raise ValueError(f"--model must be one of {', '.join(GRID_MODELS)}, got {model!r}")
    if split_name not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split_name!r}")
    load0 = os.getloadavg()[0]
    ds = load_bench_dataset(dataset, data)
    split = leave_one_out(ds, cold_fraction=0.1, seed=seed)
    cold_users = None
    if split_name == "selection":  # a further 10% of items only in validation: cold targets
        ordinary = split
        split = hold_out_validation_cold(ordinary, 0.1, seed=seed + 1)
        cold_users = validation_cold_users(split, ordinary)
    torch.manual_seed(seed)
    t0 = time.monotonic()
    out: dict[str, Any]
    if model == "sasrec_ce":
        scfg = sasrec_ce_bench_config(seed, ds.name)
        scfg.time_budget_s = None
        apply_sasrec_overrides(scfg, overrides)
        sres = train_sasrec(scfg, split)
        out = {"best_epoch": sres.best_epoch, "valid": sres.valid, "settings": asdict(scfg)}
        score = sasrec_score_fn(sres.model, scfg.max_len)
    elif model == "product":
        from bench.quality_config import product_fit

        rest = {k: v for k, v in overrides.items() if not k.startswith("recipe.")}
        if rest:
            raise ValueError(f"--set {', '.join(rest)}: the product takes recipe.x keys only")
        recipe = apply_recipe_overrides(PRODUCT_RECIPE, overrides)
        content = content_matrix(ds.items, HFEmbedder())
        fitted = product_fit(split, content, ds.name, seed, None, quick, recipe=recipe)
        out = {
            "best_epoch": fitted.best_epoch,
            "valid": fitted.valid,
            "epochs_run": len(fitted.history),
            "curve": fitted.history,
            "recipe": recipe.as_dict(),
            "settings": fitted.settings,
        }
        score = fitted.score_fn()
    else:
        content = content_matrix(ds.items, HFEmbedder())
        recipe = apply_recipe_overrides(
            BENCH_RECIPES[model], {k: v for k, v in overrides.items() if k.startswith("recipe.")}
        )
        inputs, cfg = learn_recipe(model, content, split, ds.name, seed, recipe)
        cfg.time_budget_s = None
        learn_over = {
            k: v for k, v in overrides.items() if not k.startswith(("inputs.", "recipe."))
        }
        for key, value in overrides.items():
            if key.startswith("inputs."):
                name = key.removeprefix("inputs.")
                if not hasattr(inputs, name):
                    raise ValueError(f"--set {key}: no such input setting")
                setattr(inputs, name, value)
        apply_overrides(cfg, learn_over)
        res = train_learn(cfg, split, inputs)
        out = {
            "best_epoch": res.best_epoch,
            "valid": res.valid,
            "epochs_run": len(res.history),
            "curve": res.history,
            "recipe": recipe.as_dict(),
            "settings": asdict(cfg),
        }
        score = learn_score_fn(res.model, res.inputs, cfg.history_len)
    if cold_users is not None:
        # the selection split's validation, as test counts it: every user, then the
        # users whose target was held out of training (cold) and the rest
        ranks = eval_loop(score, split, "valid")
        has = ~np.isnan(ranks)
        out["valid"] = ranking_metrics(ranks[has])
        out["valid_cold"] = ranking_metrics(ranks[has & cold_users])
        out["valid_warm"] = ranking_metrics(ranks[has & ~cold_users])
    return {
        "dataset": ds.name,
        "seed": seed,
        "model": model,
        "overrides": overrides,
        "train_seconds": time.monotonic() - t0,
        "load1_before": load0,
        "load1_after": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(),
        "split": SPLITS[split_name],
    } | out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one validation-only grid point (module docstring)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data", default=None)
    ap.add_argument("--model", required=True, choices=GRID_MODELS)
    ap.add_argument("--set", action="append", default=[], help="override key=value")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="ordinary", choices=list(SPLITS))
    ap.add_argument("--quick", action="store_true", help="product: 2 epochs (smoke test)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="JSON lines file to append to")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    rep = run(args.dataset, args.data, args.model, parse_overrides(args.set), args.seed, args.split)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(rep, default=float) + "\n")
    v = rep["valid"]
    cold = ""
    if "valid_cold" in rep:
        c, w = rep["valid_cold"], rep["valid_warm"]
        cold = f"; cold hr@10 {c['hr@10']:.4f} ({c['n']} users), warm {w['hr@10']:.4f}"
    print(
        f"{rep['model']} {rep['overrides']}: valid hr@10 {v['hr@10']:.4f} ndcg@10 "
        f"{v['ndcg@10']:.4f}{cold} best epoch {rep['best_epoch']} ({rep['train_seconds']:.0f} "
        f"s, load {rep['load1_before']:.1f}->{rep['load1_after']:.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
