"""Quality benchmark: LEARN vs SASRec (BCE and CE) vs popularity vs LEARN-with-IDs, one run.

    python -m bench.quality --dataset ml-100k --data ../shared/data/ml-100k --out FILE.json
    python -m bench.quality --dataset ml-1m-subset --data ../shared/data/ml-1m --out FILE.json
    python -m bench.quality --dataset DIR --out FILE.json   # DIR: ratings.dat + movies.dat

Every target ratio is taken against the stronger SASRec (BCE or CE) on test, named in
``targets.best_sasrec``.

Writes FILE.json (``models.<name>.<metric>``, ``slices.<slice>.<name>.<metric>``, wall
time and peak memory per model), FILE.md (a Markdown table) and FILE.png (a plot).
Model selection uses the validation targets only; the test targets are read once,
after training, for the reported numbers.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality_config import (  # noqa: F401  (re-exported: the grid and tests use them)
    BENCH_RECIPES,
    HYBRID_RECIPE,
    bench_epochs,
    learn_bench_config,
    learn_recipe,
    product_fit,
    sasrec_ce_bench_config,
)
from bench.quality_report import LEARN_MODELS, SASRECS, compute_targets, write_report
from trainers.learn import LearnTrainConfig
from trainers.recipe import PRODUCT_RECIPE
from trainers.sasrec import SASRecTrainConfig
from trainers.splits import Split

log = logging.getLogger("bench.quality")

#: The default run: the served model, content-only LEARN, the strong baseline, the
#: fusion of the last two, popularity. ``--models`` adds the others (``KNOWN_MODELS``).
MODELS = ("product", "learn", "sasrec_ce", "learn_fused_holdout", "popularity")
#: Every model the benchmark can train (``quality_report.LEARN_MODELS``: the LEARN ones,
#: ``bench.quality_config.BENCH_RECIPES`` names their recipes).
KNOWN_MODELS = (
    *MODELS,
    "learn_hybrid",
    "sasrec",
    "learn_fused",
    "learn_id",
    "learn_content",
)
KNOWN_DATASETS = ("ml-100k", "ml-1m-subset", "sample")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs`` 5) so each model gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``fn``; return its result, wall seconds and peak RSS (MiB) during the call."""
    _reset_peak_rss()
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0, _peak_rss_mb()


def load_bench_dataset(dataset: str, data: str | None) -> Any:
    """A known data set by name, or any directory in MovieLens-1M layout."""
    from learn_core.datasets import load_dataset
    from learn_core.datasets.movielens import is_ml1m_layout, load_ml1m_layout

    if dataset in KNOWN_DATASETS:
        return load_dataset(dataset, data)
    if is_ml1m_layout(dataset):
        return load_ml1m_layout(dataset)
    raise ValueError(
        f"--dataset {dataset!r}: neither one of {', '.join(KNOWN_DATASETS)} nor a directory "
        "with ratings.dat and movies.dat"
    )


def check_models(models: tuple[str, ...]) -> None:
    """Refuse an unknown model, or a fusion before its parts, before any training starts."""
    known = KNOWN_MODELS
    unknown = [m for m in models if m not in known]
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    for fused in ("learn_fused", "learn_fused_holdout"):
        if fused in models and not {"learn", "sasrec_ce"} <= set(models[: models.index(fused)]):
            raise SystemExit(f"--models: {fused} needs learn and sasrec_ce before it")


def run(
    dataset: str,
    data: str | None,
    seed: int = 0,
    models: tuple[str, ...] = MODELS,
    quick: bool = False,
    time_budget_s: float | None = 840.0,
    on_model: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate the models; return the report dictionary.

    ``time_budget_s`` caps each LEARN model's and SASRec+CE's training (None: no cap, the
    same epochs on any machine however loaded). ``on_model(report)`` sees the report
    after every model (targets so far), so that a long run leaves its finished models.
    """
    import torch

    from learn_core.embedding.hf import HFEmbedder
    from learn_core.models import Popularity
    from trainers.content_cache import content_matrix
    from trainers.evaluation import eval_loop, summarise
    from trainers.learn import CVRStageConfig, learn_score_fn, train_cvr_stage, train_learn
    from trainers.sasrec import sasrec_score_fn, train_sasrec
    from trainers.splits import leave_one_out

    check_models(models)
    t_start = time.monotonic()
    ds = load_bench_dataset(dataset, data)
    split = leave_one_out(ds, cold_fraction=0.1, seed=seed)
    log.info("%s: %s, %d cold items", ds.name, ds.summary(), int(split.cold.sum()))

    embedder = HFEmbedder()
    content, emb_s, _ = _measure(lambda: content_matrix(ds.items, embedder))
    report: dict[str, Any] = {
        "dataset": ds.name,
        "data": ds.summary(),
        "seed": seed,
        "protocol": "leave-one-out (last=test, second-to-last=valid), full ranking over all items, "
        "seen items excluded; 10% random items held out of training (cold)",
        "content_model": {
            "id": embedder.model_id,
            "dim": embedder.dim,
            "seconds_incl_cache": emb_s,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "models": {},
        "slices": {},
        "settings": {},
    }
    epochs = 2 if quick else None

    def fit_learn(name: str, on: Split) -> tuple[Any, LearnTrainConfig]:
        inputs, cfg = learn_recipe(name, content, on, dataset, seed)
        cfg.time_budget_s = time_budget_s
        if epochs:
            cfg.epochs = epochs
        return train_learn(cfg, on, inputs), cfg

    def fit_sasrec(name: str, on: Split) -> tuple[Any, SASRecTrainConfig]:
        scfg = (
            SASRecTrainConfig(seed=seed)
            if name == "sasrec"
            else sasrec_ce_bench_config(seed, ds.name)
        )
        if name == "sasrec_ce":
            scfg.time_budget_s = time_budget_s
        if epochs:
            scfg.epochs, scfg.eval_every = epochs, 1
        return train_sasrec(scfg, on), scfg

    ranks: dict[str, np.ndarray] = {}
    scorers: dict[str, Any] = {}
    trained: dict[str, Any] = {}

    @functools.cache
    def mapped_sasrec_ce() -> tuple[Any, Any]:
        """SASRec+CE's scorer with cold rows mapped from content: one map for both fusions."""
        from trainers.fusion import mapped_id_scores

        return mapped_id_scores(*trained["sasrec_ce"], content, split.cold)

    for name in models:
        torch.manual_seed(seed)
        if name == "popularity":
            pop, wall, peak = _measure(lambda: Popularity(split.n_items).fit(split.train))
            score = lambda u, h, pop=pop: pop.scores(len(u))  # noqa: E731
            extra: dict[str, Any] = {}
        elif name == "learn_fused":
            from trainers.fusion import fused_score_fn, select_fusion

            def fuse() -> tuple[Any, Any]:
                ids, mapping = mapped_sasrec_ce()
                return select_fusion(scorers["learn"], ids, split), (ids, mapping)

            (fusion, (ids, mapping)), wall, peak = _measure(fuse)
            score = fused_score_fn(scorers["learn"], ids, split.cold, fusion)
            report["settings"][name] = (
                {"parts": ["learn", "sasrec_ce"]}
                | asdict(fusion)
                | {"ridge_l2": mapping.l2, "ridge_heldout_mse": mapping.heldout_mse}
            )
            extra = {"alpha": fusion.alpha, "valid": {"ndcg@10": fusion.valid_ndcg10[fusion.alpha]}}
        elif name == "learn_fused_holdout":
            from bench.fusion_holdout import holdout_fusion

            def parts(on: Split) -> tuple[Any, Any, int]:
                torch.manual_seed(seed)
                res, cfg = fit_learn("learn", on)
                torch.manual_seed(seed)
                sres, scfg = fit_sasrec("sasrec_ce", on)
                return (
                    learn_score_fn(res.model, res.inputs, cfg.history_len),
                    sres.model,
                    scfg.max_len,
                )

            (score, report["settings"][name], extra), wall, peak = _measure(
                lambda: holdout_fusion(
                    parts, content, split, seed, scorers["learn"], mapped_sasrec_ce()
                )
            )
        elif name == "product":
            fitted, wall, peak = _measure(
                lambda: product_fit(split, content, dataset, seed, time_budget_s, quick)
            )
            report["settings"][name] = fitted.settings | {
                "recipe": PRODUCT_RECIPE.as_dict(),
                "history_len": fitted.history_len,
            }
            score = fitted.score_fn()
            extra = {
                "recipe": PRODUCT_RECIPE.name,
                "best_epoch": fitted.best_epoch,
                "valid": fitted.valid,
                "epochs": fitted.history,
            }
            t_cvr = time.monotonic()
            extra["cvr_stage"] = fitted.cvr_stage(split, CVRStageConfig(seed=seed)) | {
                "seconds": time.monotonic() - t_cvr
            }
        elif name in LEARN_MODELS:
            (res, cfg), wall, peak = _measure(lambda name=name: fit_learn(name, split))
            report["settings"][name] = asdict(cfg) | {"recipe": BENCH_RECIPES[name].as_dict()}
            score = learn_score_fn(res.model, res.inputs, cfg.history_len)
            extra = {"best_epoch": res.best_epoch, "valid": res.valid, "epochs": res.history}
            if name == "learn":
                # The separate CVR stage on the frozen towers: its validation AUC shows
                # whether mid-emb carries the conversion signal (rating >= 4).
                t_cvr = time.monotonic()
                extra["cvr_stage"] = train_cvr_stage(
                    res.model, res.inputs, split, cfg.history_len, CVRStageConfig(seed=seed)
                ) | {"seconds": time.monotonic() - t_cvr}
        elif name in SASRECS:
            (sres, scfg), wall, peak = _measure(lambda name=name: fit_sasrec(name, split))
            report["settings"][name] = asdict(scfg)
            score = sasrec_score_fn(sres.model, scfg.max_len)
            trained[name] = (sres.model, scfg.max_len)
            extra = {"best_epoch": sres.best_epoch, "valid": sres.valid}
        else:
            raise ValueError(f"unknown model {name!r}")
        scorers[name] = score
        (r, eval_s, _) = _measure(lambda score=score: eval_loop(score, split, "test"))
        ranks[name] = r
        summary = summarise(r, split)
        report["models"][name] = (
            summary["all"]
            | {"train_seconds": wall, "eval_seconds": eval_s, "peak_rss_mb": peak}
            | extra
        )
        for sl in ("cold", "warm", "long_tail", "short_history"):
            report["slices"].setdefault(sl, {})[name] = summary[sl]
        log.info(
            "%s test hr@10 %.4f ndcg@10 %.4f (train %.0fs)",
            name,
            summary["all"]["hr@10"],
            summary["all"]["ndcg@10"],
            wall,
        )
        if on_model is not None:
            report["targets"] = compute_targets(report["models"], report["slices"])
            report["total_seconds"] = time.monotonic() - t_start
            on_model(report)
    report["targets"] = compute_targets(report["models"], report["slices"])
    report["total_seconds"] = time.monotonic() - t_start
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="LEARN quality benchmark (see module docstring)")
    ap.add_argument(
        "--dataset",
        required=True,
        help=f"{', '.join(KNOWN_DATASETS)}, or a directory in MovieLens-1M layout "
        "(ratings.dat + movies.dat)",
    )
    ap.add_argument("--data", default=None, help="data directory (MovieLens); default for sample")
    ap.add_argument(
        "--out", type=Path, required=True, help="report JSON; .md and .png go next to it"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--quick", action="store_true", help="2 epochs per model (smoke test)")
    ap.add_argument(
        "--time-budget",
        type=float,
        default=840.0,
        help="seconds of training per LEARN model and SASRec+CE; 0 = none (epochs and "
        "early stopping alone, so the result does not depend on the machine's load)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write(report: dict[str, Any], complete: bool = False) -> str:
        report["complete"] = complete
        return write_report(report, args.out)

    report = run(
        args.dataset,
        args.data,
        args.seed,
        tuple(args.models.split(",")),
        args.quick,
        args.time_budget or None,
        on_model=write,
    )
    print(write(report, complete=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
