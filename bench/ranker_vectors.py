"""bench.ranker's vectors: LEARN (the product's recipe) and SASRec+CE, trained on the first
period only, then written as the streaming system would have served them at each instant.

A user's vector after each instant it interacted is stamped ``AFTER`` that instant (the
user tower over its last H items so far); item vectors are stamped before the first event
(the catalogue is known up front; a cold item's vector comes from its content alone). The
CVR head is fitted on the first period's labelled exposures against those same
point-in-time vectors, so mid-emb is never fitted on a row the ranker trains or tests on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from bench.ranker_data import AFTER, EVENT_TS, TimeSplit
from learn_core.datasets import Dataset

log = logging.getLogger(__name__)


@dataclass
class Vectors:
    """One model's point-in-time rows: user states and item vectors, in view layout."""

    name: str
    version: str
    users: pd.DataFrame  # user_id, embedding, model_version[, history_len], event_timestamp
    items: pd.DataFrame  # item_id, embedding, model_version, event_timestamp
    mid: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # (U, I) -> mid-emb
    info: dict[str, Any] | None = None


def user_states(
    interactions: pd.DataFrame, h: int, needed: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, list[list[str]]]:
    """Each (user, instant) with an interaction, stamped ``AFTER`` it, and the user's last
    ``h`` items up to and including that instant (oldest first).

    ``needed`` (``user_id``, ``event_timestamp`` rows): only the states those rows read
    (each row's newest state at or before it), the others cost a forward for nothing.
    """
    df = interactions[["user_id", "item_id", "occurred_at"]]
    ts = pd.to_datetime(df["occurred_at"], utc=True).dt.floor("us")
    order = np.lexsort((ts.to_numpy(), df["user_id"].to_numpy()))
    users = df["user_id"].to_numpy()[order]
    items = df["item_id"].to_numpy()[order]
    times = ts.to_numpy()[order]
    last = np.ones(len(order), bool)
    last[:-1] = (users[1:] != users[:-1]) | (times[1:] != times[:-1])
    ends = np.flatnonzero(last)
    frame = pd.DataFrame(
        {"user_id": users[ends], EVENT_TS: pd.to_datetime(times[ends], utc=True) + AFTER}
    )
    if needed is not None:
        ends, frame = _read_states(frame, ends, needed)
    first = np.zeros(len(order), np.int64)  # index of each row's user's first row
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    first[starts] = starts
    first = np.maximum.accumulate(first)
    windows = [[str(i) for i in items[max(first[n], n + 1 - h) : n + 1]] for n in ends]
    return frame, windows


def _read_states(
    frame: pd.DataFrame, ends: np.ndarray, needed: pd.DataFrame
) -> tuple[np.ndarray, pd.DataFrame]:
    """The states (rows of ``frame``) that some row of ``needed`` reads."""
    from bench.ranker_join import pandas_join

    tagged = frame.assign(state=np.arange(len(frame)))
    got = pandas_join(needed[["user_id", EVENT_TS]], {"s": (tagged, "user_id")})["s__state"]
    keep = np.unique(got.dropna().to_numpy(np.int64))
    return ends[keep], frame.iloc[keep].reset_index(drop=True)


def _rows(key: str, ids: Any, vecs: np.ndarray, version: str, when: Any) -> pd.DataFrame:
    return pd.DataFrame(
        {
            key: np.asarray(ids),
            "embedding": list(vecs.astype(np.float32)),
            "model_version": version,
            EVENT_TS: when,
            "created": pd.Timestamp(datetime.now(UTC)),
        }
    )


def _towers_dataset(ds: Dataset, split: TimeSplit) -> Dataset:
    t = pd.to_datetime(ds.interactions["occurred_at"], utc=True)
    return Dataset(ds.name, ds.items, ds.interactions[(t < split.towers_end).to_numpy()])


def learn_vectors(
    ds: Dataset,
    split: TimeSplit,
    content: np.ndarray,
    labelled: pd.DataFrame,
    seed: int,
    quick: bool,
    time_budget_s: float | None,
) -> Vectors:
    """The product's recipe trained on the first period; users, items and its CVR head."""
    import torch

    from bench.quality_config import product_fit
    from learn_core.inference import embed_windows, encode_items
    from learn_core.serving import as_serving
    from trainers.learn import fit_cvr_head
    from trainers.splits import leave_one_out

    torch.manual_seed(seed)
    tsplit = leave_one_out(_towers_dataset(ds, split), cold_fraction=0.0, seed=seed)
    fitted = product_fit(tsplit, content, ds.name, seed, time_budget_s, quick)
    model = as_serving(f"ranker-learn-s{seed}", fitted.model)
    h = fitted.history_len
    frame, windows = user_states(ds.interactions, h)
    by_id = dict(zip(ds.item_ids, content, strict=True))
    vecs = np.concatenate(
        [
            embed_windows(model.user_tower, windows[s : s + 2048], by_id, h)
            for s in range(0, len(windows), 2048)
        ]
    )
    log.info("learn: %d user states embedded", len(windows))
    users = _rows("user_id", frame["user_id"], vecs, model.version, frame[EVENT_TS])
    users.insert(3, "history_len", np.asarray([len(w) for w in windows], np.int64))
    start = labelled[EVENT_TS].min() - pd.Timedelta(days=1)
    items = _rows(
        "item_id", ds.item_ids, encode_items(model, content, ds.item_ids), model.version, start
    )
    head_info = _fit_head(model.cvr_head, users, items, labelled, split, seed, fit_cvr_head)
    head_info |= {"best_epoch": fitted.best_epoch, "valid": fitted.valid, "history_len": h}

    def mid(u: np.ndarray, it: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out, _ = model.cvr_head(torch.from_numpy(u), torch.from_numpy(it))
        return out.numpy()

    model.cvr_head.eval()
    return Vectors("learn", model.version, users, items, mid, head_info)


def _fit_head(
    head: Any,
    users: pd.DataFrame,
    items: pd.DataFrame,
    labelled: pd.DataFrame,
    split: TimeSplit,
    seed: int,
    fit: Any,
) -> dict[str, Any]:
    """Fit the CVR head on the first period's exposures, user vectors as of each one."""
    import torch

    from bench.ranker_join import pandas_join
    from trainers.learn import CVRStageConfig

    first = labelled[split.period(labelled[EVENT_TS]) == "towers"]
    joined = pandas_join(first, {"u": (users, "user_id"), "i": (items, "item_id")})
    ok = joined["u__embedding"].notna() & joined["i__embedding"].notna()
    u = torch.from_numpy(np.stack(joined.loc[ok, "u__embedding"].to_numpy()).astype(np.float32))
    it = torch.from_numpy(np.stack(joined.loc[ok, "i__embedding"].to_numpy()).astype(np.float32))
    y = torch.from_numpy(joined.loc[ok, "label"].to_numpy(np.float32))
    out = fit(head, u, it, y, CVRStageConfig(seed=seed))
    return {"cvr_head": out, "cvr_head_pairs": int(ok.sum())}


def sasrec_vectors(
    ds: Dataset,
    split: TimeSplit,
    labelled: pd.DataFrame,
    seed: int,
    quick: bool,
    time_budget_s: float | None,
) -> Vectors:
    """SASRec+CE on the first period: the last position's hidden state is the user vector,
    the item's embedding row the item vector (an item unseen there keeps its random row)."""
    import torch

    from bench.quality_config import sasrec_ce_bench_config
    from trainers.sasrec import _left_pad, train_sasrec
    from trainers.splits import leave_one_out

    torch.manual_seed(seed)
    tsplit = leave_one_out(_towers_dataset(ds, split), cold_fraction=0.0, seed=seed)
    cfg = sasrec_ce_bench_config(seed, ds.name)
    cfg.time_budget_s = time_budget_s
    if quick:
        cfg.epochs, cfg.eval_every = 2, 1
    res = train_sasrec(cfg, tsplit)
    model = res.model.eval()
    version = f"ranker-sasrec-ce-s{seed}"
    later = labelled[split.period(labelled[EVENT_TS]) != "towers"]
    frame, windows = user_states(ds.interactions, cfg.max_len, later)
    index = {i: n for n, i in enumerate(ds.item_ids)}
    seqs = [np.asarray([index[i] for i in w], np.int64) for w in windows]
    out = []
    with torch.inference_mode():
        for s in range(0, len(seqs), 1024):
            padded = torch.from_numpy(_left_pad(seqs[s : s + 1024], cfg.max_len))
            out.append(model(padded)[:, -1].numpy())
    log.info("sasrec_ce: %d user states embedded", len(windows))
    users = _rows("user_id", frame["user_id"], np.concatenate(out), version, frame[EVENT_TS])
    start = labelled[EVENT_TS].min() - pd.Timedelta(days=1)
    table = model.items.weight.detach()[1:].numpy()
    items = _rows("item_id", ds.item_ids, table, version, start)
    return Vectors("sasrec_ce", version, users, items, None, {"best_epoch": res.best_epoch})
