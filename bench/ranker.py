"""A ranker on Feast's point-in-time features, with and without LEARN's vectors and mid-emb.

    python -m bench.ranker --dataset ml-100k --data ../shared/data/ml-100k --out F.json
    python -m bench.ranker --dataset ../shared/data/amazon-pantry --out F.json --seeds 0

Labelled exposures (``bench.ranker_data``) are split by time into three periods: LEARN
(the product's recipe) and SASRec+CE train on the first, and the CVR head on its labelled
exposures; LightGBM trains on the second (its last part for early stopping) and is tested
once on the third. Every feature reaches a row through Feast's ``get_historical_features``
(the ranking team's feature services, ``feature_repo.definitions.RANKER_SERVICES``) in a
throwaway project per profile, checked equal to a plain pandas as-of join, whose time is
reported beside Feast's. Sets: A statistics; B A + LEARN's user and item vectors; C B +
mid-emb; A_sasrec A + SASRec+CE's vectors. JSON: ``auc.<set>.<slice>`` and
``gauc.<set>.<slice>`` (mean over seeds; ``*_std`` the spread, ``per_seed`` each run).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.ranker_data import EVENT_TS, labelled_events, slices, stats_rows, time_split
from bench.ranker_join import FeastBuild, pandas_join, same_frames
from bench.ranker_model import SETS, SLICES, feature_sets, fit_predict, metrics
from bench.ranker_vectors import Vectors, learn_vectors, sasrec_vectors
from feature_repo.schema import ID_ITEM, ID_USER, ITEM_STATS, ITEM_TOWER, USER_STATS, USER_TOWER

log = logging.getLogger("bench.ranker")
PROFILES = ("embedded", "production")
SERVICES = Path(__file__).resolve().parents[1] / ".ci" / "services.sh"


def ensure_services() -> None:
    """Start Redis and PostgreSQL (``.ci/services.sh start``) when none is configured."""
    if "LEARNREC_FEAST_PG_PASSWORD" in os.environ:
        return
    out = subprocess.run(
        ["bash", str(SERVICES), "start"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export ") :].partition("=")
            os.environ[k] = v.strip("'\"")


def view_rows(
    user_stats: pd.DataFrame, item_stats: pd.DataFrame, learn: Vectors, sasrec: Vectors
) -> dict[str, tuple[pd.DataFrame, str]]:
    """Every view's rows with its join key: what is written to Feast and joined by pandas."""
    return {
        USER_STATS.name: (user_stats, "user_id"),
        ITEM_STATS.name: (item_stats, "item_id"),
        USER_TOWER.name: (learn.users, "user_id"),
        ITEM_TOWER.name: (learn.items, "item_id"),
        ID_USER.name: (sasrec.users, "user_id"),
        ID_ITEM.name: (sasrec.items, "item_id"),
    }


def build_sets(
    rows: pd.DataFrame,
    views: dict[str, tuple[pd.DataFrame, str]],
    profiles: tuple[str, ...],
    workdir: Path,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The joined training frame (Feast's, from the first profile) and the build timings.

    Each profile's Feast build is compared, column by column, with the pandas join.
    """
    t0 = time.monotonic()
    reference = pandas_join(rows, views)
    timing: dict[str, Any] = {"pandas_join_s": time.monotonic() - t0}
    log.info("pandas join: %d rows in %.1fs", len(rows), timing["pandas_join_s"])
    frame = reference
    for n, profile in enumerate(profiles):
        if profile == "production":
            ensure_services()
        fb = FeastBuild.open(profile, workdir)
        try:
            t1 = time.monotonic()
            for view, (df, _) in views.items():
                fb.write(view, df)
            write_s = time.monotonic() - t1
            joined, historical_s = fb.build(rows, "ranker_b", "ranker_a_id")
            cols = [c for c in reference.columns if c not in rows.columns]
            bad = same_frames(joined, reference, cols)
            timing[profile] = {
                "write_s": write_s,
                "historical_s": historical_s,
                "equal_to_pandas": not bad,
                "differing_columns": bad,
            }
            log.info("%s: Feast build %s", profile, timing[profile])
            if n == 0:
                frame = joined
        finally:
            fb.close()
    return frame, timing


def run_seed(
    ds: Any,
    labelled: pd.DataFrame,
    split: Any,
    content: np.ndarray,
    stats: tuple[pd.DataFrame, pd.DataFrame],
    seed: int,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    """One seed: both vector models, the Feast builds, the four rankers, their metrics."""
    budget = args.time_budget or None
    t0 = time.monotonic()
    learn = learn_vectors(ds, split, content, labelled, seed, args.quick, budget)
    learn_s = time.monotonic() - t0
    sasrec = sasrec_vectors(ds, split, labelled, seed, args.quick, budget)
    sasrec_s = time.monotonic() - t0 - learn_s
    period = split.period(labelled[EVENT_TS])
    rows = labelled[period != "towers"].reset_index(drop=True)
    rows_period = period[period != "towers"]
    views = view_rows(*stats, learn, sasrec)
    frame, timing = build_sets(rows, views, tuple(args.profiles), workdir)
    assert learn.mid is not None
    sets = feature_sets(frame, learn.mid)
    test = rows_period == "test"
    known = pd.to_datetime(ds.interactions["occurred_at"], utc=True) < split.test_start
    sl = slices(ds.interactions[known.to_numpy()], rows[test])
    masks = {"all": np.ones(int(test.sum()), bool), "cold": sl.cold, "tail": sl.tail}
    users, y = rows.loc[test, "user_id"].to_numpy(), rows["label"].to_numpy()
    out: dict[str, Any] = {
        "auc": {},
        "gauc": {},
        "n": {},
        "lgbm": {},
        "seconds": {"learn": learn_s, "sasrec_ce": sasrec_s},
        "build": timing,
        "learn": learn.info,
        "sasrec_ce": sasrec.info,
    }
    for name in SETS:
        scores, info = fit_predict(
            sets[name], y, rows_period, seed, args.threads, 60 if args.quick else 1000
        )
        m = metrics(users, y[test], scores, masks)
        out["auc"][name], out["gauc"][name], out["n"] = m["auc"], m["gauc"], m["n"]
        out["lgbm"][name] = info | {"features": sets[name].shape[1]}
        log.info("seed %d %s auc %s gauc %s", seed, name, m["auc"], m["gauc"])
    return out


def summarise(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread (population std) over seeds of every ``auc``/``gauc`` figure."""
    out: dict[str, Any] = {}
    for metric in ("auc", "gauc"):
        for stat, fn in ((metric, np.mean), (f"{metric}_std", np.std)):
            out[stat] = {
                s: {sl: float(fn([r[metric][s][sl] for r in runs.values()])) for sl in SLICES}
                for s in SETS
            }
    gain = {
        "C_minus_A": {sl: out["gauc"]["C"][sl] - out["gauc"]["A"][sl] for sl in SLICES},
        "C_minus_A_sasrec": {
            sl: out["gauc"]["C"][sl] - out["gauc"]["A_sasrec"][sl] for sl in SLICES
        },
    }
    out["gauc_gain"] = gain
    return out


def run(args: argparse.Namespace, ds: Any = None) -> dict[str, Any]:
    """The whole benchmark (``main``'s flags); ``ds`` replaces ``--dataset`` (tests)."""
    from bench.quality import load_bench_dataset
    from bench.ranking_store import git_commit, machine
    from learn_core.embedding.hf import HFEmbedder
    from trainers.content_cache import content_matrix

    t_start = time.monotonic()
    ds = ds if ds is not None else load_bench_dataset(args.dataset, args.data)
    labelled, how = labelled_events(ds, args.negatives)
    split = time_split(labelled[EVENT_TS])
    period = split.period(labelled[EVENT_TS])
    content = content_matrix(ds.items, HFEmbedder())
    category = {it.item_id: it.category or "" for it in ds.items}
    stats = (stats_rows(labelled, "user_id"), stats_rows(labelled, "item_id", category))
    report: dict[str, Any] = {
        "dataset": ds.name,
        "data": ds.summary(),
        "labels": how,
        "rows": {p: int((period == p).sum()) for p in ("towers", "train", "valid", "test")},
        "positive_rate": float(labelled["label"].mean()),
        "split": {k: str(v) for k, v in vars(split).items()},
        "profiles": list(args.profiles),
        "quick": args.quick,
        "seeds": list(args.seeds),
        "commit": git_commit(),
        "machine": machine() | {"threads": args.threads},
    }
    runs: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ranker-") as tmp:
        for seed in args.seeds:
            runs[seed] = run_seed(ds, labelled, split, content, stats, seed, args, Path(tmp))
            report |= summarise(runs)
            report["per_seed"] = {str(k): v for k, v in runs.items()}
            report["total_seconds"] = time.monotonic() - t_start
            _write(args.out, report)
    return report


def merge(paths: list[Path]) -> dict[str, Any]:
    """Reports of the same data set run as separate seeds, as one report (mean, spread)."""
    import json

    reports = [json.loads(p.read_text()) for p in paths]
    if len({r["dataset"] for r in reports}) != 1:
        raise SystemExit("--merge: reports of different data sets")
    runs = {int(k): v for r in reports for k, v in r["per_seed"].items()}
    out = reports[0] | summarise(runs)
    out["per_seed"] = {str(k): runs[k] for k in sorted(runs)}
    out["seeds"] = sorted(runs)
    out["merged_from"] = [str(p) for p in paths]
    return out


def _write(out: Path, report: dict[str, Any]) -> None:
    from bench.ranking_store import write_result

    write_result(out, report)


def table(report: dict[str, Any]) -> str:
    """The Markdown table of AUC / GAUC (mean ± spread) per set and slice."""
    lines = ["| set | " + " | ".join(f"AUC {s} | GAUC {s}" for s in SLICES) + " |"]
    lines.append("|---" * (1 + 2 * len(SLICES)) + "|")
    for name in SETS:
        cells = []
        for sl in SLICES:
            for m in ("auc", "gauc"):
                cells.append(f"{report[m][name][sl]:.4f} ± {report[m + '_std'][name][sl]:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="LightGBM on Feast features ± LEARN (module doc)")
    ap.add_argument(
        "--merge", type=Path, nargs="+", help="combine the per-seed runs of these reports"
    )
    ap.add_argument("--dataset", help="ml-100k, ml-1m-subset, sample or a dir")
    ap.add_argument("--data", default=None, help="data directory (MovieLens)")
    ap.add_argument("--out", type=Path, required=True, help="report JSON")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument(
        "--profiles",
        type=lambda s: [p for p in s.split(",") if p],
        default=list(PROFILES),
        help="Feast profiles to build through (comma-separated; the first one's frame trains)",
    )
    ap.add_argument("--negatives", type=int, default=None, help="per purchase (purchase-only data)")
    ap.add_argument("--threads", type=int, default=1, help="torch and LightGBM threads")
    ap.add_argument("--quick", action="store_true", help="2 tower epochs, 60 rounds (smoke test)")
    ap.add_argument(
        "--time-budget", type=float, default=300.0, help="seconds per tower model; 0 = none"
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.merge:
        report = merge(args.merge)
        _write(args.out, report)
        print(table(report))
        return 0
    if not args.dataset:
        ap.error("--dataset is required")
    bad = [p for p in args.profiles if p not in PROFILES]
    if bad or not args.profiles:
        ap.error(f"--profiles: choose from {', '.join(PROFILES)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    report = run(args)
    print(table(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
