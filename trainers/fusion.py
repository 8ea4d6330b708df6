"""Late fusion of a content LEARN model with an ID model (SASRec+CE), as one dot product.

    score(u, i) = s_content(u, i) / sd_content + alpha * s_id(u, i) / sd_id

The ID model never saw a cold item, so its ID row means nothing. Two ways to fill it:

* ``mapped`` (the default): a ridge map from content to ID embedding, fit on the warm
  items (``ContentToId``), so that a new item gets the ID vector its content predicts
  the moment it arrives, as the item tower gives it a content vector;
* ``neutral``: the user's mean ID score over the warm items, so the cold item neither
  gains nor loses there and ranks on its content alone;
* ``rank``: the user's ID score of the warm item at the rank the cold item's content
  score holds among the warm items, so that a cold item ranks among warm ones in the
  fused list about where it ranks in the content list (an optimistic guess: it assumes
  the two models agree in order on this user's items).

Written as embeddings it is still one dot product, which the ranking service serves as
it serves LEARN: the user vector is ``[u_c / sd_c, alpha * u_id / sd_id]`` and the item
vector ``[i_c, i_id]``.

The spreads (the standard deviation of each model's scores over validation users),
``alpha`` (validation NDCG@10 over the fixed grid ``ALPHAS``) and the ridge penalty
(error on held-out warm items) are chosen without the test split, as early stopping is.
Ordinary validation targets are all warm, so it cannot see how cold items fare: there the
cold rule is a design choice. ``select_cold_rule`` chooses it, with ``alpha``, on a
selection split whose validation has cold targets (``splits.hold_out_validation_cold``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainers.evaluation import ScoreFn, eval_loop
from trainers.metrics import ranking_metrics
from trainers.splits import Split

log = logging.getLogger(__name__)

#: The grid of ID weights, fixed before any run; 0 is the content model alone.
ALPHAS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
#: How a cold item (never trained in the ID model) gets its ID score; see the module doc.
COLD_RULES: tuple[str, ...] = ("mapped", "neutral", "rank")


@dataclass
class Fusion:
    alpha: float
    sd_content: float
    sd_id: float
    #: how cold items get an ID score (``COLD_RULES``): "mapped" (their ID rows already
    #: predicted from content by ``ContentToId``), "neutral" (each user's warm mean) or
    #: "rank" (the warm ID score at the cold item's content rank)
    cold_ids: str = "mapped"
    #: validation NDCG@10 per alpha (the selection's evidence)
    valid_ndcg10: dict[float, float] = field(default_factory=dict)


def neutral_cold(scores: np.ndarray, cold: np.ndarray) -> np.ndarray:
    """ID scores with each cold item's replaced by the row's mean over warm items."""
    out = np.array(scores, dtype=np.float64)
    if cold.any() and (~cold).any():
        out[:, cold] = out[:, ~cold].mean(axis=1, keepdims=True)
    return out


def rank_matched_cold(ids: np.ndarray, content: np.ndarray, cold: np.ndarray) -> np.ndarray:
    """ID scores with each cold item's replaced by the row's warm ID score at its content rank.

    A cold item whose content score beats ``k`` of the row's warm items gets the ``k``-th
    smallest warm ID score (the smallest when it beats none).
    """
    out = np.array(ids, dtype=np.float64)
    content = np.asarray(content, np.float64)
    if cold.any() and (~cold).any():
        warm_c = np.sort(content[:, ~cold], axis=1)
        warm_i = np.sort(out[:, ~cold], axis=1)
        last = warm_c.shape[1] - 1
        for r in range(len(out)):
            below = np.searchsorted(warm_c[r], content[r, cold])
            out[r, cold] = warm_i[r, np.clip(below - 1, 0, last)]
    return out


def score_spread(fn: ScoreFn, split: Split, cold: np.ndarray | None = None) -> float:
    """Standard deviation of ``fn``'s scores over the validation users (warm-neutral if ``cold``)."""
    users = np.flatnonzero(split.valid >= 0)[:512]
    scores = np.asarray(fn(users, [split.history(int(u), "valid") for u in users]), np.float64)
    if cold is not None:
        scores = neutral_cold(scores, cold)
    sd = float(scores.std())
    if not np.isfinite(sd) or sd <= 0:
        raise ValueError(f"degenerate score spread {sd!r}: the model scores every item alike")
    return sd


def fused_score_fn(content: ScoreFn, ids: ScoreFn, cold: np.ndarray, f: Fusion) -> ScoreFn:
    """The fused scorer for ``eval_loop``."""

    def score(users: np.ndarray, hists: list[np.ndarray]) -> np.ndarray:
        c = np.asarray(content(users, hists), np.float64)
        s = c / f.sd_content
        if f.alpha:
            ids_s = np.asarray(ids(users, hists), np.float64)
            if f.cold_ids == "neutral":
                ids_s = neutral_cold(ids_s, cold)
            elif f.cold_ids == "rank":
                ids_s = rank_matched_cold(ids_s, c, cold)
            s += f.alpha * ids_s / f.sd_id
        return s

    return score


def _memo(fn: ScoreFn) -> ScoreFn:
    """``fn`` remembered per user batch (valid only while the histories are one split's)."""
    if getattr(fn, "memoised", False):
        return fn  # one cache per scorer, not one per nested selection
    seen: dict[bytes, np.ndarray] = {}

    def score(users: np.ndarray, hists: list[np.ndarray]) -> np.ndarray:
        key = np.asarray(users, np.int64).tobytes()
        if key not in seen:
            seen[key] = np.asarray(fn(users, hists), np.float64)
        return seen[key]

    score.memoised = True  # type: ignore[attr-defined]
    return score


def select_fusion(
    content: ScoreFn,
    ids: ScoreFn,
    split: Split,
    alphas: tuple[float, ...] = ALPHAS,
    cold_ids: str = "mapped",
) -> Fusion:
    """Spreads and ``alpha`` from validation: the grid point with the best NDCG@10 (ties: smaller)."""
    if cold_ids not in COLD_RULES:
        raise ValueError(f"cold_ids must be one of {', '.join(COLD_RULES)}, got {cold_ids!r}")
    # Every alpha ranks the same validation users in the same batches: score each model
    # once per batch, not once per alpha.
    content, ids = _memo(content), _memo(ids)
    sd_id = score_spread(ids, split, split.cold if cold_ids != "mapped" else None)
    f = Fusion(0.0, score_spread(content, split), sd_id, cold_ids)
    for a in alphas:
        trial = Fusion(a, f.sd_content, f.sd_id, cold_ids)
        ranks = eval_loop(fused_score_fn(content, ids, split.cold, trial), split, "valid")
        f.valid_ndcg10[a] = ranking_metrics(ranks[~np.isnan(ranks)])["ndcg@10"]
        log.info("fusion alpha %.2f: valid ndcg@10 %.4f", a, f.valid_ndcg10[a])
    f.alpha = max(alphas, key=lambda a: (f.valid_ndcg10[a], -a))
    return f


def select_cold_rule(
    content: ScoreFn,
    ids: ScoreFn,
    selection: Split,
    cold_users: np.ndarray,
    rules: tuple[str, ...] = COLD_RULES,
    alphas: tuple[float, ...] = ALPHAS,
) -> tuple[Fusion, dict[str, dict[str, Any]]]:
    """The cold rule and ``alpha`` with the best validation NDCG@10 on a selection split.

    ``selection``'s validation targets include items held out of its training
    (``cold_users`` marks whose), as the test's do, so the choice weighs cold targets
    as the test will. Returns the winner (ties: the earlier rule) and, per rule, the
    NDCG@10 per alpha and HR@10 of the cold-target and other users at its best alpha.
    """
    content, ids = _memo(content), _memo(ids)
    best: Fusion | None = None
    evidence: dict[str, dict[str, Any]] = {}
    for rule in rules:
        f = select_fusion(content, ids, selection, alphas, rule)
        ranks = eval_loop(fused_score_fn(content, ids, selection.cold, f), selection, "valid")
        has = ~np.isnan(ranks)
        cold_ranks = ranks[cold_users & has]
        evidence[rule] = {
            "alpha": f.alpha,
            "ndcg@10": f.valid_ndcg10,
            "cold_hr@10": ranking_metrics(cold_ranks)["hr@10"] if len(cold_ranks) else 0.0,
            "warm_hr@10": ranking_metrics(ranks[~cold_users & has])["hr@10"],
        }
        if best is None or f.valid_ndcg10[f.alpha] > best.valid_ndcg10[best.alpha]:
            best = f
    if best is None:
        raise ValueError("no cold rule to choose from")
    return best, evidence


@dataclass
class ContentToId:
    """Ridge map content -> ID embedding, fit on warm items: ``(x - mx) @ w + my``."""

    w: np.ndarray
    mx: np.ndarray
    my: np.ndarray
    l2: float
    #: held-out mean squared error per penalty tried (the choice's evidence)
    heldout_mse: dict[float, float] = field(default_factory=dict)

    def __call__(self, content: np.ndarray) -> np.ndarray:
        return ((content - self.mx) @ self.w + self.my).astype(np.float32)

    @staticmethod
    def _fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, ...]:
        mx, my = x.mean(0), y.mean(0)
        xc = x - mx
        w = np.linalg.solve(xc.T @ xc + l2 * np.eye(x.shape[1]), xc.T @ (y - my))
        return w, mx, my

    @classmethod
    def fit(
        cls,
        content: np.ndarray,
        ids: np.ndarray,
        warm: np.ndarray,
        l2s: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0),
        folds: int = 5,
        seed: int = 0,
    ) -> ContentToId:
        """The penalty with the least error on held-out warm items (k folds), refit on all."""
        x = np.asarray(content, np.float64)[warm]
        y = np.asarray(ids, np.float64)[warm]
        if len(x) < folds:
            raise ValueError(f"{len(x)} warm items: too few to fit a content -> ID map")
        fold = np.random.default_rng(seed).permutation(len(x)) % folds
        mse: dict[float, float] = {}
        for l2 in l2s:
            err = 0.0
            for k in range(folds):
                w, mx, my = cls._fit(x[fold != k], y[fold != k], l2)
                err += float((((x[fold == k] - mx) @ w + my - y[fold == k]) ** 2).sum())
            mse[l2] = err / y.size
        best = min(l2s, key=lambda v: (mse[v], -v))
        w, mx, my = cls._fit(x, y, best)
        return cls(w, mx, my, best, mse)


def with_mapped_cold(model: Any, content: np.ndarray, cold: np.ndarray) -> tuple[Any, ContentToId]:
    """A copy of a SASRec whose cold item rows are predicted from their content.

    Row 0 of ``model.items`` is padding; item ``i`` is row ``i + 1``. Cold items never
    occur in a history, so only their scores change.
    """
    import torch

    table = model.items.weight.detach().numpy()[1:]
    mapping = ContentToId.fit(content, table, ~cold)
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        rows = torch.from_numpy(np.flatnonzero(cold) + 1)
        out.items.weight[rows] = torch.from_numpy(mapping(np.asarray(content)[cold]))
    return out, mapping


def mapped_id_scores(
    model: Any, max_len: int, content: np.ndarray, cold: np.ndarray
) -> tuple[ScoreFn, ContentToId]:
    """A SASRec's scorer with its cold rows predicted from content, and the map that did it."""
    from trainers.sasrec import sasrec_score_fn

    mapped, mapping = with_mapped_cold(model, content, cold)
    return sasrec_score_fn(mapped, max_len), mapping
