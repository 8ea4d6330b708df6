"""The evaluation loop: full ranking over all items, seen items excluded, with slices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from trainers.metrics import DEFAULT_KS, ranking_metrics, target_ranks
from trainers.splits import Split

#: ``(user indices, their histories) -> scores [len(users), n_items]``.
ScoreFn = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]

SLICES = ("cold", "long_tail", "short_history")


def eval_loop(
    score_fn: ScoreFn, split: Split, which: str = "test", batch_size: int = 256
) -> np.ndarray:
    """Rank of each user's ``which`` target (``NaN`` where the user has none)."""
    targets = split.test if which == "test" else split.valid
    ranks = np.full(len(split.users), np.nan)
    users = np.flatnonzero(targets >= 0)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        hists = [split.history(int(u), which) for u in batch]
        scores = np.asarray(score_fn(batch, hists), dtype=np.float64)
        exclude = np.zeros(scores.shape, dtype=bool)
        for r, u in enumerate(batch):
            exclude[r, split.excluded(int(u), which)] = True
        ranks[batch] = target_ranks(scores, targets[batch], exclude)
    return ranks


def slice_masks(split: Split, long_tail_share: float = 0.8) -> dict[str, np.ndarray]:
    """Per-user boolean masks over test users for each slice, plus ``warm``."""
    has = split.test >= 0
    target = np.where(has, split.test, 0)
    counts = split.train_counts()
    # Bottom 80% of the warm items by training popularity (ties broken by index). Cold
    # items have no training count; they form their own slice and are left out here.
    warm_items = np.flatnonzero(~split.cold)
    order = warm_items[np.lexsort((warm_items, counts[warm_items]))]
    tail = np.zeros(split.n_items, dtype=bool)
    tail[order[: int(long_tail_share * len(warm_items))]] = True
    return {
        "cold": has & split.cold[target],
        "warm": has & ~split.cold[target],
        "long_tail": has & tail[target] & ~split.cold[target],
        "short_history": has & (split.n_events <= 5),
    }


def summarise(ranks: np.ndarray, split: Split, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, dict]:
    """Overall metrics and per-slice metrics for one model's test ranks."""
    out = {"all": ranking_metrics(ranks[~np.isnan(ranks)], ks)}
    for name, mask in slice_masks(split).items():
        out[name] = ranking_metrics(ranks[mask & ~np.isnan(ranks)], ks)
    return out


def served_score_fn(model: Any, content: np.ndarray, item_ids: list[str], h: int) -> ScoreFn:
    """Scores as the product serves them, for any served model (``ServingModel``).

    Item vectors come from the item tower by id and content (``encode_items``: what the
    item consumer and the backfill write), user vectors from the user tower over each
    window of the newest ``h`` items (``embed_windows``: what the interaction consumer
    writes); the score is their dot product, as the ranking reader's index computes it.
    """
    from learn_core.inference import embed_windows, encode_items

    items = encode_items(model, content, item_ids)
    lookup = dict(zip(item_ids, content, strict=True))

    def score(users: np.ndarray, hists: list[np.ndarray]) -> np.ndarray:
        windows = [[item_ids[i] for i in seq] for seq in hists]
        return embed_windows(model.user_tower, windows, lookup, h) @ items.T

    return score
