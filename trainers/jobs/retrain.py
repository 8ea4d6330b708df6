"""The retraining job: point-in-time training data, towers + CVR head, evaluate, promote.

``retrain(handle, registry, settings) -> RetrainReport`` runs, in order:

1. **Training data, point in time.** The offline interaction log up to the cut-off
   (the start of the held-out window) is joined with ``item_content_embedding`` *as of
   each interaction's time* through Feast's historical retrieval
   (``FeatureStoreHandle.historical``). An interaction whose item had no content yet is
   dropped; a content row written after an interaction is never joined to it. Each
   distinct (item, content vector) becomes one input token, so an item whose text
   changed is seen with the content it had at the time.
2. **Towers, then the CVR head** (``trainers.learn.train_learn``, ``train_cvr_stage``).
3. **Evaluate** candidate and current model on the held-out recent window: each user's
   first interaction in the window, ranked over the catalogue from their history before
   it (HR@10; popularity on the same rows for reference).
4. **Promote** when ``candidate >= current - tolerance`` (or there is no current model):
   save, backfill every item and user under the new version, switch the pointer, then
   catch up rows that writers on the old version wrote meanwhile. Otherwise keep the
   current model and log why.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ranking.item_tower import ITEM_CONTENT_VIEW
from trainers.recipe import RecipeSettings

if TYPE_CHECKING:
    from feature_repo.store import FeatureStoreHandle
    from ranking.models import ServingModel
    from trainers.splits import Split

log = logging.getLogger(__name__)

INTERACTION_LOG = "interaction_log"
CONTENT_FEATURE = f"{ITEM_CONTENT_VIEW}:embedding"
CONTENT_VERSION_FEATURE = f"{ITEM_CONTENT_VIEW}:model_version"


class RetrainSettings(RecipeSettings):
    """Retraining job (env prefix ``LEARNREC_RETRAIN_``)."""

    model_config = SettingsConfigDict(env_prefix="LEARNREC_RETRAIN_", extra="forbid")

    holdout_fraction: float = Field(
        0.1, gt=0, lt=0.9, description="newest share of interactions held out for evaluation"
    )
    tolerance: float = Field(0.005, ge=0, le=1, description="HR@10 the candidate may lose")
    epochs: int = Field(6, ge=1, le=1000)
    patience: int = Field(2, ge=1, le=100)
    batch_size: int = Field(128, ge=1)
    history_len: int = Field(50, ge=1, le=64, description="H; same as the interaction consumer")
    target_len: int = Field(10, ge=1, le=64)
    windows_per_user: int = Field(8, ge=1)
    cvr_epochs: int = Field(3, ge=1)
    min_interactions: int = Field(50, ge=1, description="fewer: the job does nothing")
    catchup_delay_s: float = Field(
        6.0, ge=0, description="second catch-up after the switch (> consumers' reload period)"
    )
    seed: int = 0
    torch_threads: int = Field(2, ge=1, le=64)


class Registry(Protocol):
    """What the job needs from ``learn_core.registry.ModelRegistry``."""

    def current_version(self) -> str | None: ...

    def load(self, version: str) -> Any: ...

    def promote(self, version: str) -> None: ...


@dataclass
class TrainingData:
    """Point-in-time training rows and their token matrix."""

    frame: pd.DataFrame  # interactions < cut-off with a ``token`` column
    matrix: np.ndarray  # [n_tokens, content_dim]
    token_items: list[str]  # item id of each token
    dropped_no_content: int
    cutoff: datetime
    content_model: str = "unknown"  # model_version of the content embeddings trained on


@dataclass
class RetrainReport:
    cutoff: str
    window_end: str
    train_interactions: int
    dropped_no_content: int
    eval_users: int
    candidate: dict[str, float]
    current: dict[str, float] | None
    popularity: dict[str, float]
    promoted: bool
    reason: str
    version: str | None = None
    current_version: str | None = None
    backfill: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------- training data


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


# ---------------------------------------------------------------------- evaluation


@dataclass
class EvalSet:
    """Held-out window: per user, history (content vectors) before it and the first target."""

    users: list[str]
    histories: list[list[str]]  # item ids, oldest first
    targets: list[str]
    catalogue: list[str]
    content: dict[str, np.ndarray]  # as of the window's end


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
    content_df = handle.read_offline(ITEM_CONTENT_VIEW, end=end)
    content_df = content_df.sort_values("event_timestamp", kind="stable").drop_duplicates(
        "item_id", keep="last"
    )
    content = {
        i: np.asarray(v, np.float32)
        for i, v in zip(content_df["item_id"], content_df["embedding"], strict=True)
    }
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


def hit_rates(scores: np.ndarray, ev: EvalSet) -> dict[str, float]:
    from trainers.metrics import ranking_metrics, target_ranks

    pos = {i: n for n, i in enumerate(ev.catalogue)}
    exclude = np.zeros(scores.shape, bool)
    for r, hist in enumerate(ev.histories):
        exclude[r, [pos[i] for i in hist]] = True
    ranks = target_ranks(scores, np.asarray([pos[t] for t in ev.targets]), exclude)
    m = ranking_metrics(ranks, (10, 50))
    return {"hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"], "hr@50": m["hr@50"], "n": m["n"]}


def evaluate_model(model: ServingModel, ev: EvalSet, h: int) -> dict[str, float]:
    """HR@10 of ``model`` on the held-out window (full ranking over the catalogue)."""
    from ranking.item_tower import encode_items
    from streaming.interaction_consumer import embed_windows

    if not ev.users:
        return {"hr@10": float("nan"), "ndcg@10": float("nan"), "hr@50": float("nan"), "n": 0}
    items = encode_items(model, np.stack([ev.content[i] for i in ev.catalogue]))
    users = np.concatenate(
        [
            embed_windows(model.user_tower, ev.histories[s : s + 512], ev.content, h)
            for s in range(0, len(ev.users), 512)
        ]
    )
    return hit_rates(users @ items.T, ev)


def evaluate_popularity(train_frame: pd.DataFrame, ev: EvalSet) -> dict[str, float]:
    counts = train_frame["item_id"].value_counts()
    pop = np.asarray([counts.get(i, 0) for i in ev.catalogue], np.float64)
    if not ev.users:
        return {"hr@10": float("nan"), "n": 0}
    return hit_rates(np.broadcast_to(pop, (len(ev.users), len(pop))), ev)


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


# ----------------------------------------------------------------------------- job


def retrain(
    handle: FeatureStoreHandle,
    registry: Registry,
    settings: RetrainSettings | None = None,
    *,
    save: Any = None,
    progress: bool = False,
    force: bool = False,
) -> RetrainReport | None:
    """Run the whole job once; ``None`` when there is too little data to train on.

    ``save(result, meta) -> version`` stores a trained model (default: ``save_model``).
    ``force`` promotes even a worse candidate (the demo's first model, operators).
    """
    import torch

    from learn_core.models import FrozenContent, LearnConfig, TowerConfig
    from ranking.models import as_serving
    from trainers.jobs.backfill import backfill, catch_up
    from trainers.learn import CVRStageConfig, LearnTrainConfig, train_cvr_stage, train_learn

    s = settings or RetrainSettings()
    torch.set_num_threads(s.torch_threads)
    secs: dict[str, float] = {}
    t0 = time.monotonic()
    log_df = handle.read_offline(INTERACTION_LOG)
    if len(log_df) < s.min_interactions:
        log.info("retrain skipped: %d interactions < %d", len(log_df), s.min_interactions)
        return None
    end = pd.to_datetime(log_df["event_timestamp"], utc=True).max().to_pydatetime()
    end = end + pd.Timedelta(microseconds=1)
    cutoff = holdout_start(log_df, s.holdout_fraction)
    data = point_in_time_frame(handle, log_df, cutoff)
    split = training_split(data)
    ev = eval_set(handle, log_df, cutoff, end, s.history_len)
    secs["data"] = time.monotonic() - t0
    log.info(
        "retrain: %d interactions before %s (%d without content yet), %d tokens, %d eval users",
        len(data.frame),
        cutoff.isoformat(),
        data.dropped_no_content,
        len(data.token_items),
        len(ev.users),
    )

    t1 = time.monotonic()
    dim = data.matrix.shape[1]
    cfg = LearnTrainConfig(
        model=LearnConfig(tower=TowerConfig(content_dim=dim, item_variant=s.item_variant)),
        pairing=s.pairing,
        history_len=s.history_len,
        target_len=s.target_len,
        windows_per_user=s.windows_per_user,
        batch_size=s.batch_size,
        epochs=s.epochs,
        patience=s.patience,
        seed=s.seed,
    )
    inputs = FrozenContent(torch.from_numpy(data.matrix))
    result = train_learn(cfg, split, inputs)
    cvr = train_cvr_stage(
        result.model, inputs, split, s.history_len, CVRStageConfig(epochs=s.cvr_epochs, seed=s.seed)
    )
    secs["train"] = time.monotonic() - t1

    t2 = time.monotonic()
    cand_metrics = evaluate_model(as_serving("candidate", result.model), ev, s.history_len)
    cur_version = registry.current_version()
    cur_metrics = None
    if cur_version is not None:
        cur_metrics = evaluate_model(
            as_serving(cur_version, registry.load(cur_version)), ev, s.history_len
        )
    pop = evaluate_popularity(data.frame, ev)
    promote, reason = should_promote(
        cand_metrics["hr@10"], None if cur_metrics is None else cur_metrics["hr@10"], s.tolerance
    )
    if force and not promote:
        promote, reason = True, f"forced ({reason})"
    secs["evaluate"] = time.monotonic() - t2
    report = RetrainReport(
        cutoff=cutoff.isoformat(),
        window_end=end.isoformat(),
        train_interactions=len(data.frame),
        dropped_no_content=data.dropped_no_content,
        eval_users=len(ev.users),
        candidate=cand_metrics
        | {"valid_auc_cvr": cvr["valid_auc"], "best_epoch": result.best_epoch},
        current=cur_metrics,
        popularity=pop,
        promoted=promote,
        reason=reason,
        current_version=cur_version,
    )
    log.info("retrain decision: %s", reason)
    if not promote:
        report.seconds = secs
        return report

    meta = {
        "content_model": data.content_model,
        "data_window": {"end": cutoff.isoformat(), "eval_end": end.isoformat()},
        "metrics": {"holdout": cand_metrics, "cvr": cvr, "valid": result.valid},
        "parent_version": cur_version,
        "train_interactions": len(data.frame),
    }
    version = (save or save_model)(registry, result, meta)
    report.version = version
    t3 = time.monotonic()
    serving = as_serving(version, registry.load(version))
    bf = backfill(handle, serving, history_len=s.history_len, progress=progress)
    report.backfill = asdict(bf)
    secs["backfill"] = time.monotonic() - t3
    registry.promote(version)  # atomic pointer switch, only after the backfill
    log.info("promoted %s (was %s)", version, cur_version)
    fixed = catch_up(handle, serving, history_len=s.history_len)
    if s.catchup_delay_s > 0:
        time.sleep(s.catchup_delay_s)
        fixed += catch_up(handle, serving, history_len=s.history_len)
    report.backfill["caught_up"] = fixed
    secs["total"] = time.monotonic() - t0
    report.seconds = secs
    return report


def save_model(registry: Any, result: Any, meta: dict[str, Any]) -> str:
    """Store a trained model in ``learn_core.registry`` (unpromoted); returns its version."""
    return str(registry.save(result.model, **meta))
