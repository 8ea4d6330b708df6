"""bench.quality's report: target ratios, Markdown tables, the plot, and merging runs.

    python -m bench.quality_report --out F.json A.json B.json

merges reports of the same data set, seed and split (say the LEARN models from one
process and the SASRecs from another, run side by side on a busy machine: every model
reseeds, so the order and the process do not change its figures) into one report and
recomputes the targets and the tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

SASRECS = ("sasrec", "sasrec_ce")
LEARN_MODELS = (
    "product",
    "learn",
    "learn_content",
    "learn_hybrid",
    "learn_fused",
    "learn_fused_holdout",
    "learn_id",
)
SHOWN = ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200", "mrr")


def compute_targets(m: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    """The issue's target ratios, against the stronger SASRec on test (named in ``best_sasrec``)."""
    targets: dict[str, Any] = {}
    sasrecs = [n for n in SASRECS if n in m]
    if sasrecs:
        # the stronger baseline on test: the ratios must hold against it, not the weaker one
        best = max(sasrecs, key=lambda n: m[n]["hr@10"])
        targets["best_sasrec"] = best
    content_side = [
        n for n in ("learn", "learn_content", "learn_hybrid") if "valid" in m.get(n, {})
    ]
    if "product" in m and "learn" in m:
        # the cold-start target: the served model keeps content-only LEARN's cold start
        targets["product_cold_over_learn_cold_hr@10"] = s["cold"]["product"]["hr@10"] / max(
            s["cold"]["learn"]["hr@10"], 1e-12
        )
    if content_side:
        # which content-side LEARN the product should default to: validation NDCG@10, the
        # early-stopping criterion, never a test figure
        targets["learn_validation_winner"] = max(
            content_side, key=lambda n: m[n]["valid"]["ndcg@10"]
        )
    for n in (x for x in LEARN_MODELS if x in m):
        for b in sasrecs:
            targets[f"{n}_over_{b}_hr@10"] = m[n]["hr@10"] / max(m[b]["hr@10"], 1e-12)
        if sasrecs:
            targets[f"{n}_over_best_sasrec_hr@10"] = targets[f"{n}_over_{best}_hr@10"]
        if n == "learn_id":
            continue
        targets[f"{n}_cold_over_warm_hr@10"] = s["cold"][n]["hr@10"] / max(
            s["warm"][n]["hr@10"], 1e-12
        )
        if "sasrec_ce" in m:
            targets[f"{n}_warm_minus_sasrec_ce_warm_hr@10"] = (
                s["warm"][n]["hr@10"] - s["warm"]["sasrec_ce"]["hr@10"]
            )
        targets[f"{n}_train_seconds"] = m[n]["train_seconds"]
    return targets


def markdown(report: dict[str, Any]) -> str:
    """The Markdown table for docs: overall metrics, then HR@10/NDCG@10 per slice."""
    names = list(report["models"])
    lines = [
        f"### {report['dataset']} ({report['data']['users']} users, {report['data']['items']} items, "
        f"{report['data']['interactions']} interactions; seed {report['seed']})",
        "",
        "| model | " + " | ".join(SHOWN) + " | train s | peak RSS MiB |",
        "|---|" + "---:|" * (len(SHOWN) + 2),
    ]
    for n in names:
        r = report["models"][n]
        lines.append(
            f"| {n} | "
            + " | ".join(f"{r[k]:.4f}" for k in SHOWN)
            + f" | {r['train_seconds']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "| slice (n users) | " + " | ".join(f"{n} HR@10 / NDCG@10" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for sl, per in report["slices"].items():
        n_users = next(iter(per.values()))["n"]
        cells = [
            "n/a" if v["n"] == 0 else f"{v['hr@10']:.4f} / {v['ndcg@10']:.4f}"
            for v in (per[n] for n in names)
        ]
        lines.append(f"| {sl} ({n_users}) | " + " | ".join(cells) + " |")
    if "cvr_stage" in report["models"].get("learn", {}):
        c = report["models"]["learn"]["cvr_stage"]
        lines += [
            "",
            "CVR head (separate stage, frozen LEARN towers): "
            + (
                c.get("skipped", "not fitted")
                if c.get("valid_auc") is None
                else f"validation AUC {c['valid_auc']:.3f}"
            ),
        ]
    lines += [
        "",
        "Targets: "
        + ", ".join(
            f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}"
            for k, v in report["targets"].items()
        ),
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["models"])
    groups = ["all", "warm", "cold", "long_tail", "short_history"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, metric in zip(axes, ("hr@10", "ndcg@10"), strict=True):
        width = 0.8 / len(names)
        for i, n in enumerate(names):
            vals = [
                report["models"][n][metric]
                if g == "all"
                else report["slices"][g][n].get(metric, np.nan)
                for g in groups
            ]
            ax.bar(np.arange(len(groups)) + i * width, np.nan_to_num(vals), width, label=n)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
        ax.set_title(f"{report['dataset']}: {metric.upper()} (test, full ranking)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several of the same data set, seed and split; a model twice fails."""
    if not reports:
        raise ValueError("nothing to merge")
    first = reports[0]
    for r in reports[1:]:
        for key in ("dataset", "seed", "data", "protocol"):
            if r.get(key) != first.get(key):
                raise ValueError(
                    f"cannot merge: {key} differs ({r.get(key)!r} vs {first.get(key)!r})"
                )
    out = {k: v for k, v in first.items() if k not in ("models", "slices", "settings", "targets")}
    out |= {"models": {}, "slices": {}, "settings": {}, "merged_from": len(reports)}
    out["total_seconds"] = sum(r.get("total_seconds", 0.0) for r in reports)
    out["complete"] = all(r.get("complete", False) for r in reports)
    for r in reports:
        for name, m in r["models"].items():
            if name in out["models"]:
                raise ValueError(f"cannot merge: model {name!r} is in two reports")
            out["models"][name] = m
            out["settings"][name] = r.get("settings", {}).get(name)
            for sl, per in r["slices"].items():
                out["slices"].setdefault(sl, {})[name] = per[name]
    out["targets"] = compute_targets(out["models"], out["slices"])
    return out


def write_report(report: dict[str, Any], out: Path) -> str:
    """FILE.json, FILE.md and FILE.png; returns the Markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    plot(report, out.with_suffix(".png"))
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="merge bench.quality reports (module docstring)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("reports", type=Path, nargs="+")
    args = ap.parse_args(argv)
    merged = merge([json.loads(p.read_text()) for p in args.reports])
    print(write_report(merged, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
