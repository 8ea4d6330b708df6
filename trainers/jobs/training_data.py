"""Training data of the retraining job: the offline log joined with content, point in time.

The offline interaction log up to the cut-off (the start of the held-out window) is
joined with ``item_content_embedding`` *as of each interaction's time* through Feast's
historical retrieval (``FeatureStoreHandle.historical``). An interaction whose item had
no content yet is dropped; a content row written after an interaction is never joined
to it. Each distinct (item, content vector) becomes one input token, so an item whose
text changed is seen with the content it had at the time.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from feature_repo.schema import ITEM_CONTENT

if TYPE_CHECKING:
    from feature_repo.store import FeatureStoreHandle
    from trainers.splits import Split

log = logging.getLogger(__name__)

CONTENT_FEATURE = f"{ITEM_CONTENT.name}:embedding"
CONTENT_VERSION_FEATURE = f"{ITEM_CONTENT.name}:model_version"


@dataclass
class TrainingData:
    """Point-in-time training rows and their token matrix."""

    frame: pd.DataFrame  # interactions < cut-off with a ``token`` column
    matrix: np.ndarray  # [n_tokens, content_dim]
    token_items: list[str]  # item id of each token
    dropped_no_content: int
    cutoff: datetime
    content_model: str = "unknown"  # model_version of the content embeddings trained on


def holdout_start(log_df: pd.DataFrame, fraction: float) -> datetime:
    """The time that leaves the newest ``fraction`` of interactions after it."""
    ts = pd.to_datetime(log_df["event_timestamp"], utc=True).sort_values(ignore_index=True)
    return ts.iloc[int(len(ts) * (1 - fraction))].to_pydatetime()


def point_in_time_frame(
    handle: FeatureStoreHandle, log_df: pd.DataFrame, cutoff: datetime
) -> TrainingData:
    """Interactions before ``cutoff`` with content as of each one's time, tokenised."""
    rows = log_df[pd.to_datetime(log_df["event_timestamp"], utc=True) < cutoff]
    rows = rows.sort_values(["event_timestamp", "event_id"], kind="stable").reset_index(drop=True)
    entity = rows[["event_id", "user_id", "item_id", "event_type", "value", "event_timestamp"]]
    joined = handle.historical(entity, [CONTENT_FEATURE, CONTENT_VERSION_FEATURE])
    has = joined["embedding"].notna()
    dropped = int((~has).sum())
    joined = joined[has].reset_index(drop=True)
    versions = joined["model_version"].value_counts()
    if len(versions) > 1:
        log.warning(
            "training rows mix content-model versions %s; recording the most common", dict(versions)
        )
    content_model = str(versions.index[0]) if len(versions) else "unknown"
    joined = joined.drop(columns=["model_version"])
    keys: dict[tuple[str, str], int] = {}
    vectors: list[np.ndarray] = []
    items: list[str] = []
    tokens = np.empty(len(joined), np.int64)
    for r, (iid, emb) in enumerate(zip(joined["item_id"], joined["embedding"], strict=True)):
        vec = np.asarray(emb, np.float32)
        key = (iid, hashlib.blake2b(vec.tobytes(), digest_size=8).hexdigest())
        t = keys.get(key)
        if t is None:
            t = keys[key] = len(vectors)
            vectors.append(vec)
            items.append(iid)
        tokens[r] = t
    joined = joined.drop(columns=["embedding"]).assign(token=tokens)
    dim = vectors[0].shape[0] if vectors else 0
    matrix = np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)
    return TrainingData(joined, matrix, items, dropped, cutoff, content_model)


def training_split(data: TrainingData) -> Split:
    """Per user, time order: the last token is the validation target, the rest trains."""
    from learn_core.datasets.base import conversion_labels
    from trainers.splits import Split

    df = data.frame
    conv = conversion_labels(df.rename(columns={"event_timestamp": "occurred_at"}))
    users, train, train_conv, valid, n_events = [], [], [], [], []
    for user, idx in df.groupby("user_id", sort=True).indices.items():
        seq = df["token"].to_numpy()[idx]
        lab = conv[idx]
        users.append(str(user))
        n_events.append(len(seq))
        if len(seq) >= 3:
            valid.append(int(seq[-1]))
            train.append(seq[:-1])
            train_conv.append(lab[:-1])
        else:
            valid.append(-1)
            train.append(seq)
            train_conv.append(lab)
    n_tok = len(data.token_items)
    return Split(
        item_ids=[f"t{t}" for t in range(n_tok)],
        users=users,
        train=train,
        train_conv=train_conv,
        valid=np.asarray(valid, np.int64),
        test=np.full(len(users), -1, np.int64),
        cold=np.zeros(n_tok, bool),
        n_events=np.asarray(n_events, np.int64),
    )
