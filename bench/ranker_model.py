"""bench.ranker's ranker: feature matrices of each set, LightGBM, AUC and GAUC by slice.

Pure but for LightGBM: a joined frame (``<view>__<feature>`` columns) in, scores and
metrics out. Early stopping reads the validation period only; the test is scored once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from bench.ranker_data import derived
from feature_repo.schema import ID_ITEM, ID_USER, ITEM_STATS, ITEM_TOWER, USER_STATS, USER_TOWER
from trainers.learn import auc

SETS = ("A", "B", "C", "A_sasrec")
SLICES = ("all", "cold", "tail")


def _stats(frame: pd.DataFrame) -> pd.DataFrame:
    cols = {}
    for side, view in (("user", USER_STATS.name), ("item", ITEM_STATS.name)):
        for f in ("events", "conversions", "first_event_s", "last_event_s"):
            cols[f"{side}_{f}"] = frame[f"{view}__{f}"]
    base = pd.DataFrame(cols).assign(event_timestamp=frame["event_timestamp"].to_numpy())
    out = derived(base)
    out["item_category"] = frame[f"{ITEM_STATS.name}__category"].fillna("").to_numpy()
    return out


def _matrix(col: pd.Series, dim: int) -> np.ndarray:
    """Object column of vectors (None where absent) -> ``[n, dim]`` float32, NaN rows absent."""
    out = np.full((len(col), dim), np.nan, np.float32)
    for r, v in enumerate(col.to_numpy()):
        if v is not None and not (np.isscalar(v) and pd.isna(v)):
            out[r] = np.asarray(v, np.float32)
    return out


def _dim(col: pd.Series) -> int:
    for v in col.to_numpy():
        if v is not None and not (np.isscalar(v) and pd.isna(v)):
            return len(v)
    raise ValueError(f"{col.name}: no vector in any row")


def _vectors(frame: pd.DataFrame, user_view: str, item_view: str, tag: str) -> pd.DataFrame:
    u_col, i_col = frame[f"{user_view}__embedding"], frame[f"{item_view}__embedding"]
    d = _dim(i_col)
    u, it = _matrix(u_col, d), _matrix(i_col, d)
    out = pd.DataFrame(
        np.hstack([u, it]),
        columns=[f"{tag}_u{k}" for k in range(d)] + [f"{tag}_i{k}" for k in range(d)],
        index=frame.index,
    )
    out[f"{tag}_dot"] = (u * it).sum(axis=1)  # the model's own score (NaN where absent)
    return out


def feature_sets(
    frame: pd.DataFrame, mid: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> dict[str, pd.DataFrame]:
    """The four sets over one joined frame. C's mid-emb is ``mid(user, item)`` over B's
    vectors, as the ranking reader computes it; NaN where the user has no vector yet."""
    a = _stats(frame)
    learn = _vectors(frame, USER_TOWER.name, ITEM_TOWER.name, "learn")
    d = (learn.shape[1] - 1) // 2
    u, it = learn.iloc[:, :d].to_numpy(np.float32), learn.iloc[:, d : 2 * d].to_numpy(np.float32)
    ok = ~np.isnan(u).any(axis=1) & ~np.isnan(it).any(axis=1)
    m = np.full((len(frame), 0), np.nan, np.float32)
    if ok.any():
        got = mid(u[ok], it[ok])
        m = np.full((len(frame), got.shape[1]), np.nan, np.float32)
        m[ok] = got
    mid_df = pd.DataFrame(m, columns=[f"mid{k}" for k in range(m.shape[1])], index=frame.index)
    sasrec = _vectors(frame, ID_USER.name, ID_ITEM.name, "sasrec")
    b = pd.concat([a, learn], axis=1)
    return {
        "A": a,
        "B": b,
        "C": pd.concat([b, mid_df], axis=1),
        "A_sasrec": pd.concat([a, sasrec], axis=1),
    }


def lgbm_params(seed: int, threads: int) -> dict[str, Any]:
    """Settings fixed up front (none tuned on test; rounds by validation early stopping)."""
    return {
        "objective": "binary",
        "metric": "auc",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "seed": seed,
        "num_threads": threads,
        "verbosity": -1,
    }


def fit_predict(
    x: pd.DataFrame,
    y: np.ndarray,
    period: np.ndarray,
    seed: int,
    threads: int = 1,
    rounds: int = 1000,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train on ``train`` rows, stop on ``valid`` AUC (50 rounds' patience), score ``test``."""
    import lightgbm as lgb

    x = x.copy()
    if "item_category" in x:
        cats = pd.Categorical(x.loc[period == "train", "item_category"]).categories
        x["item_category"] = pd.Categorical(x["item_category"], categories=cats)
    tr, va, te = (period == p for p in ("train", "valid", "test"))
    dtrain = lgb.Dataset(x[tr], y[tr])
    dvalid = lgb.Dataset(x[va], y[va], reference=dtrain)
    booster = lgb.train(
        lgbm_params(seed, threads),
        dtrain,
        num_boost_round=rounds,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    best = booster.best_iteration or rounds
    info = {"best_iteration": best, "valid_auc": float(booster.best_score["valid_0"]["auc"])}
    return booster.predict(x[te], num_iteration=best), info


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Per-user AUC weighted by the user's rows, over users with both classes."""
    order = np.argsort(users, kind="stable")
    u, y, s = users[order], labels[order], scores[order]
    cuts = np.flatnonzero(u[1:] != u[:-1]) + 1
    total, weight = 0.0, 0
    for yy, ss in zip(np.split(y, cuts), np.split(s, cuts), strict=True):
        pos = int(yy.sum())
        if 0 < pos < len(yy):
            total += auc(yy, ss) * len(yy)
            weight += len(yy)
    return total / weight if weight else float("nan")


def metrics(
    users: np.ndarray, labels: np.ndarray, scores: np.ndarray, masks: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """``{"auc": {slice: v}, "gauc": {slice: v}, "n": {slice: rows}}`` over the test rows."""
    out: dict[str, dict[str, float]] = {"auc": {}, "gauc": {}, "n": {}}
    for name, m in masks.items():
        out["auc"][name] = auc(labels[m], scores[m])
        out["gauc"][name] = gauc(users[m], labels[m], scores[m])
        out["n"][name] = int(m.sum())
    return out
