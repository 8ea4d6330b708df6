"""Ranking metrics from the 0-based rank of each user's single target item."""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (10, 50, 200)


def target_ranks(
    scores: np.ndarray, targets: np.ndarray, exclude: np.ndarray | None = None
) -> np.ndarray:
    """0-based rank of ``targets[b]`` among ``scores[b]`` (higher is better).

    Excluded items (``exclude[b, i]`` True, e.g. already seen) are removed, never the
    target itself. Ties count half, the expected rank under a random tie-break, so a
    model that scores everything equally gets no free hits.
    """
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(len(targets))
    t = scores[rows, targets][:, None]
    alive = np.ones_like(scores, dtype=bool) if exclude is None else ~exclude
    alive[rows, targets] = False
    greater = ((scores > t) & alive).sum(1)
    ties = ((scores == t) & alive).sum(1)
    return greater + 0.5 * ties


def ranking_metrics(ranks: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float | int]:
    """HR@k, NDCG@k (one relevant item: ``1/log2(rank+2)`` if ``rank < k``) and MRR."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float | int] = {"n": int(len(ranks))}
    if len(ranks) == 0:
        return (
            out
            | {f"{m}@{k}": float("nan") for k in ks for m in ("hr", "ndcg")}
            | {"mrr": float("nan")}
        )
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out
