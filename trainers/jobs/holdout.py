"""Evaluation of the retraining job: candidate and current model on the held-out window.

Each user's first interaction in the window is the target, ranked over the catalogue
from their history before it, items already in that history excluded. The ranking is
the offline evaluator's (``trainers.evaluation.eval_loop`` over a ``Split`` built from
the window), so the job and the benchmarks count hits the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from feature_repo.schema import ITEM_CONTENT
from learn_core.inference import latest_vectors
from trainers.evaluation import ScoreFn, eval_loop, served_score_fn
from trainers.metrics import ranking_metrics
from trainers.splits import Split

if TYPE_CHECKING:
    from feature_repo.store import FeatureStoreHandle
    from learn_core.serving import ServingModel

#: Users per forward pass of the user tower.
EVAL_BATCH = 512
_KEYS = ("hr@10", "ndcg@10", "hr@50", "n")


@dataclass
class EvalSet:
    """Held-out window: per user, history (content vectors) before it and the first target."""

    users: list[str]
    histories: list[list[str]]  # item ids, oldest first
    targets: list[str]
    catalogue: list[str]
    content: dict[str, np.ndarray]  # as of the window's end

    def as_split(self) -> Split:
        """The window as a ``Split``: history = train, the target = test, nothing cold."""
        pos = {i: n for n, i in enumerate(self.catalogue)}
        n_users = len(self.users)
        return Split(
            item_ids=self.catalogue,
            users=self.users,
            train=[np.asarray([pos[i] for i in h], np.int64) for h in self.histories],
            train_conv=[np.zeros(len(h), bool) for h in self.histories],
            valid=np.full(n_users, -1, np.int64),
            test=np.asarray([pos[t] for t in self.targets], np.int64),
            cold=np.zeros(len(self.catalogue), bool),
            n_events=np.asarray([len(h) + 1 for h in self.histories], np.int64),
        )


def eval_set(
    handle: FeatureStoreHandle,
    log_df: pd.DataFrame,
    start: datetime,
    end: datetime,
    h: int,
) -> EvalSet:
    """Users with history before ``start`` and an interaction in ``[start, end)``."""
    ts = pd.to_datetime(log_df["event_timestamp"], utc=True)
    df = log_df.assign(_ts=ts).sort_values(["_ts", "event_id"], kind="stable")
    content = latest_vectors(handle.read_offline(ITEM_CONTENT.name, end=end))
    before = df[df["_ts"] < start]
    inside = df[(df["_ts"] >= start) & (df["_ts"] < end)]
    first = inside.drop_duplicates("user_id", keep="first").set_index("user_id")["item_id"]
    hist = before.groupby("user_id")["item_id"].apply(list)
    users, hists, targets = [], [], []
    for u, target in first.items():
        past = [i for i in hist.get(u, []) if i in content][-h:]
        if past and target in content:
            users.append(str(u))
            hists.append(past)
            targets.append(str(target))
    return EvalSet(users, hists, targets, sorted(content), content)


def hit_rates(score_fn: ScoreFn, ev: EvalSet) -> dict[str, float]:
    """HR@10, NDCG@10, HR@50 of ``score_fn`` on the window (the offline evaluator's ranks)."""
    ranks = eval_loop(score_fn, ev.as_split(), "test", batch_size=EVAL_BATCH)
    m = ranking_metrics(ranks, (10, 50))
    return {k: m[k] for k in _KEYS}


def evaluate_model(model: ServingModel, ev: EvalSet, h: int) -> dict[str, float]:
    """HR@10 of ``model`` on the held-out window (full ranking over the catalogue)."""
    if not ev.users:
        return {"hr@10": float("nan"), "ndcg@10": float("nan"), "hr@50": float("nan"), "n": 0}
    content = np.stack([ev.content[i] for i in ev.catalogue])
    return hit_rates(served_score_fn(model, content, ev.catalogue, h), ev)


def evaluate_popularity(train_frame: pd.DataFrame, ev: EvalSet) -> dict[str, float]:
    counts = train_frame["item_id"].value_counts()
    pop = np.asarray([counts.get(i, 0) for i in ev.catalogue], np.float64)
    if not ev.users:
        return {"hr@10": float("nan"), "n": 0}
    return hit_rates(lambda users, _: np.broadcast_to(pop, (len(users), len(pop))), ev)


def should_promote(candidate: float, current: float | None, tolerance: float) -> tuple[bool, str]:
    """The promotion rule, and the reason either way (logged and reported)."""
    if current is None:
        return True, "no current model"
    if np.isnan(candidate):
        return False, "candidate HR@10 is NaN (empty held-out window)"
    if np.isnan(current) or candidate >= current - tolerance:
        return True, f"candidate HR@10 {candidate:.4f} >= current {current:.4f} - {tolerance}"
    return False, (
        f"candidate HR@10 {candidate:.4f} < current {current:.4f} - tolerance {tolerance}; "
        "keeping the current model"
    )
