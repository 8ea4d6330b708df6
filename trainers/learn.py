"""Train LEARN (or its ID-input ablation) on a leave-one-out split, selecting on validation.

``train_learn(cfg, split, inputs) -> LearnResult`` is the typed entry point that the
benchmark, the retraining jobs and the tests call with their own sizes.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from learn_core.contract import Pairing
from learn_core.history import pad_ids
from learn_core.models import LearnConfig, LearnModel
from trainers.evaluation import eval_loop
from trainers.learn_task import ItemInputs, LearnTaskConfig, LearnTrainTask
from trainers.loop import Progress, make_optimizer, train_loop
from trainers.metrics import ranking_metrics
from trainers.splits import Split

log = logging.getLogger(__name__)


@dataclass
class LearnTrainConfig:
    model: LearnConfig = field(default_factory=LearnConfig)
    task: LearnTaskConfig = field(default_factory=LearnTaskConfig)
    history_len: int = 50  # H
    # T=3, K=4, 24 windows: chosen on ml-100k *validation* HR@10 (0.169 vs 0.108 for T=10,
    # K=8, 8 windows); next-item targets dominate leave-one-out, so short target windows win.
    target_len: int = 3  # T
    queries: int = 4  # history positions paired with every target (dense all-action)
    # e.g. 0.9: recency weighting of query positions, as in the paper: the window pairing
    # samples them ~ decay**age, the sliding pairing weights each position's loss by it
    recency_decay: float | None = None
    # "window": K query positions x the T items after the history (item variants 1-3).
    # "sliding": every history position x the T items that follow it (variants 2-3).
    pairing: Pairing = "window"
    windows_per_user: int = 24  # cap on (history, target) windows per user per epoch
    # sliding pairing: a user of n items yields ceil(n / chunk_stride) chunks per epoch
    # (None: history_len). A stride below H overlaps the chunks, so a longer history keeps
    # the steps per epoch of a shorter one instead of giving fewer, mostly padded chunks.
    chunk_stride: int | None = None
    batch_size: int = 128
    epochs: int = 40
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    patience: int = 6  # epochs without validation gain before stopping
    time_budget_s: float | None = None  # stop after the epoch that crosses this wall time
    seed: int = 0


@dataclass
class LearnResult:
    model: LearnModel
    inputs: ItemInputs
    best_epoch: int
    valid: dict[str, float | int]
    history: list[dict[str, float]]
    train_seconds: float


def make_windows(
    split: Split, cfg: LearnTrainConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Sample (history, target) windows: a cut point splits a user's sequence into H | T.

    The last history position is always a query (it is what inference reads); the
    other K-1 query positions are sampled uniformly or by recency.
    """
    h_len, t_len, k = cfg.history_len, cfg.target_len, cfg.queries
    hists, tgts, convs, qposs = [], [], [], []
    for seq, conv in zip(split.train, split.train_conv, strict=True):
        n = len(seq)
        if n < 2:
            continue
        n_win = min(cfg.windows_per_user, max(1, n // t_len))
        for cut in rng.integers(1, n, size=n_win):
            hist = seq[max(0, cut - h_len) : cut]
            hb = np.full(h_len, -1, dtype=np.int64)
            hb[: len(hist)] = hist
            tb = np.full(t_len, -1, dtype=np.int64)
            cb = np.zeros(t_len, dtype=bool)
            tgt = seq[cut : cut + t_len]
            tb[: len(tgt)] = tgt
            cb[: len(tgt)] = conv[cut : cut + t_len]
            qb = np.full(k, -1, dtype=np.int64)
            qb[0] = len(hist) - 1
            others = np.arange(len(hist) - 1)
            if len(others):
                m = min(k - 1, len(others))
                p = None
                if cfg.recency_decay is not None:
                    p = cfg.recency_decay ** (len(hist) - 1 - others).astype(float)
                    p /= p.sum()
                qb[1 : 1 + m] = rng.choice(others, size=m, replace=False, p=p)
            hists.append(hb)
            tgts.append(tb)
            convs.append(cb)
            qposs.append(qb)
    return {
        "hist": np.stack(hists),
        "tgt": np.stack(tgts),
        "tgt_conv": np.stack(convs),
        "qpos": np.stack(qposs),
    }


def make_sliding_windows(
    split: Split, cfg: LearnTrainConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Chunks of H+T consecutive items: the newest one of every user, plus random earlier ones.

    ``chunk`` holds the first H (the user tower's input), ``tail`` the T after them;
    every position is a query whose positives are the T items that follow it. With
    ``recency_decay``, ``qweight`` weighs each position by ``decay**age``, age 0 being the
    chunk's newest position that has a next item.
    """
    h_len, t_len = cfg.history_len, cfg.target_len
    width = h_len + t_len
    stride = h_len if cfg.chunk_stride is None else cfg.chunk_stride  # >= 1: train_learn
    chunks, convs, weights = [], [], []
    for seq, conv in zip(split.train, split.train_conv, strict=True):
        n = len(seq)
        if n < 2:
            continue
        n_win = min(cfg.windows_per_user, -(-n // stride))
        ends = [n]
        if n_win > 1:
            ends += list(rng.integers(2, n, size=n_win - 1, endpoint=True))
        for end in ends:
            start = max(0, end - width)
            cb = np.full(width, -1, dtype=np.int64)
            cb[: end - start] = seq[start:end]
            vb = np.zeros(width, dtype=bool)
            vb[: end - start] = conv[start:end]
            chunks.append(cb)
            convs.append(vb)
            if cfg.recency_decay is not None:
                n_q = min(h_len, end - start - 1)  # positions with a next item
                wb = np.zeros(h_len, dtype=np.float32)
                wb[:n_q] = cfg.recency_decay ** np.arange(n_q - 1, -1, -1, dtype=np.float64)
                weights.append(wb)
    full = np.stack(chunks)
    out = {"chunk": full[:, :h_len], "tail": full[:, h_len:], "conv": np.stack(convs)}
    if weights:
        out["qweight"] = np.stack(weights)
    return out


def _batches(windows: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator):
    order = rng.permutation(len(next(iter(windows.values()))))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield {k: torch.from_numpy(v[idx]) for k, v in windows.items()}


def learn_score_fn(model: LearnModel, inputs: ItemInputs, history_len: int):
    """Scores for the evaluation loop: user state after the history · every item embedding."""
    model.eval()
    inputs.eval()  # no ID dropout at inference
    matrix = inputs.matrix.detach()
    with torch.no_grad():
        items = model.item_tower.encode_items(matrix)

    def score(users: np.ndarray, hists: list[np.ndarray]) -> np.ndarray:
        ht = torch.from_numpy(pad_ids(hists, history_len))
        with torch.no_grad():  # the adaptor runs once per item, not once per position
            u = model.user_tower.encode_rows(matrix, ht)
        return (u @ items.T).numpy()

    return score


def train_learn(
    cfg: LearnTrainConfig,
    split: Split,
    inputs: ItemInputs,
    on_valid: Callable[[int, np.ndarray], None] | None = None,
) -> LearnResult:
    """Train with early stopping on validation NDCG@10.

    ``on_valid(epoch, ranks)``, if given, sees every epoch's validation ranks (per user,
    ``NaN`` = no target), e.g. to follow a slice that the selection does not use.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.model.tower.content_dim != inputs.dim:
        raise ValueError(
            f"tower content_dim {cfg.model.tower.content_dim} != input dim {inputs.dim}"
        )
    if cfg.history_len > cfg.model.tower.max_len or cfg.target_len > cfg.model.tower.max_len:
        raise ValueError("history_len and target_len must fit in tower.max_len")
    model = LearnModel(cfg.model)
    task = LearnTrainTask(model, inputs, cfg.task)
    task.set_item_counts(torch.from_numpy(split.train_counts()))
    params = list(task.parameters())
    if cfg.pairing not in ("window", "sliding"):
        raise ValueError(f"pairing must be 'window' or 'sliding', got {cfg.pairing!r}")
    if cfg.recency_decay is not None and not 0.0 < cfg.recency_decay <= 1.0:
        raise ValueError(f"recency_decay must be in (0, 1], got {cfg.recency_decay}")
    if cfg.chunk_stride is not None and cfg.chunk_stride < 1:
        raise ValueError(f"chunk_stride must be >= 1, got {cfg.chunk_stride}")
    if cfg.pairing == "sliding" and cfg.model.tower.item_variant == 1:
        raise ValueError(
            "pairing='sliding' needs item_variant 2 or 3: variant 1 reads a separate target "
            "sequence, which the sliding pairing does not have"
        )
    if cfg.task.negatives == "catalogue" and cfg.pairing != "sliding":
        raise ValueError("task.negatives='catalogue' needs pairing='sliding'")
    sample = make_sliding_windows if cfg.pairing == "sliding" else make_windows
    n_windows = len(next(iter(sample(split, cfg, np.random.default_rng(cfg.seed)).values())))
    steps_per_epoch = -(-n_windows // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt, sched = make_optimizer(
        params, cfg.lr, cfg.weight_decay, total, int(cfg.warmup_frac * total)
    )
    progress = Progress(total, "learn")
    best, best_state, best_epoch, since, history = -1.0, None, -1, 0, []
    t0 = time.monotonic()
    for epoch in range(cfg.epochs):
        task.train()
        windows = sample(split, cfg, rng)
        loss = train_loop(
            task,
            _batches(windows, cfg.batch_size, rng),
            opt,
            sched,
            params,
            progress,
            cfg.grad_clip,
        )
        ranks = eval_loop(learn_score_fn(model, inputs, cfg.history_len), split, "valid")
        val = ranking_metrics(ranks[~np.isnan(ranks)])
        if on_valid is not None:
            on_valid(epoch, ranks)
        history.append(
            {
                "epoch": epoch,
                "loss": loss,
                "valid_hr@10": val["hr@10"],
                "valid_ndcg@10": val["ndcg@10"],
            }
        )
        log.info(
            "learn epoch %d loss %.4f valid hr@10 %.4f ndcg@10 %.4f",
            epoch,
            loss,
            val["hr@10"],
            val["ndcg@10"],
        )
        if val["ndcg@10"] > best:
            best, best_epoch, since = val["ndcg@10"], epoch, 0
            best_state = copy.deepcopy(task.state_dict())
            best_val = val
        else:
            since += 1
            if since >= cfg.patience:
                break
        if cfg.time_budget_s is not None and time.monotonic() - t0 > cfg.time_budget_s:
            log.info("learn: time budget %.0fs reached after epoch %d", cfg.time_budget_s, epoch)
            break
    assert best_state is not None
    task.load_state_dict(best_state)
    model.eval()
    return LearnResult(model, inputs, best_epoch, best_val, history, time.monotonic() - t0)


@dataclass
class CVRStageConfig:
    epochs: int = 3
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0


def train_cvr_stage(
    model: LearnModel,
    inputs: ItemInputs,
    split: Split,
    history_len: int,
    cfg: CVRStageConfig,
) -> dict[str, float | str | None]:
    """The separate CVR stage: towers frozen, the head learns conversion from inference-time embeddings.

    Pairs are (user state before an interaction, that item), labelled by ``is_conversion``.
    Returns the training log-loss and the validation AUC on held-out pairs (a 10% user split).
    """
    model.eval()
    inputs.eval()
    with torch.no_grad():
        items = model.item_tower.encode_items(inputs.matrix.detach())
    users, item_idx, labels = [], [], []
    for seq, conv in zip(split.train, split.train_conv, strict=True):
        for cut in range(1, len(seq)):
            users.append(seq[max(0, cut - history_len) : cut])
            item_idx.append(seq[cut])
            labels.append(conv[cut])
    if not users:
        raise ValueError("no (history, item) pairs to train the CVR head on")
    hist = torch.from_numpy(pad_ids(users, history_len))
    with torch.no_grad():
        matrix = inputs.matrix.detach()  # the adaptor then runs once per item, not per position
        u = torch.cat([model.user_tower.encode_rows(matrix, h) for h in hist.split(2048)])
    it = items[torch.from_numpy(np.asarray(item_idx))]
    y = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    return fit_cvr_head(model.cvr_head, u, it, y, cfg)


def fit_cvr_head(
    head: torch.nn.Module, u: torch.Tensor, it: torch.Tensor, y: torch.Tensor, cfg: CVRStageConfig
) -> dict[str, float | str | None]:
    """Fit the CVR head on frozen (user vector, item vector, conversion label) pairs.

    A random 10% of the pairs is held out for the validation AUC. Shared by every model
    whose towers serve the head's inputs. Labels of one class only (purchase-only data such
    as amazon-pantry, where every interaction converts) carry no conversion signal: the
    head is left as initialised and the result says why instead of giving a ``nan`` AUC.
    """
    n_pos = int((y > 0.5).sum())
    if n_pos in (0, len(y)):
        reason = (
            f"CVR head not fitted: all {len(y)} labels are {int(n_pos > 0)} "
            "(no conversion signal; mid-emb is the untrained head's)"
        )
        log.warning("%s", reason)
        return {"train_logloss": None, "valid_auc": None, "skipped": reason}
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    held = torch.from_numpy(rng.random(len(y)) < 0.1)
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tr = torch.nonzero(~held).squeeze(1)
    loss_v = float("nan")
    for _ in range(cfg.epochs):
        for idx in tr[torch.from_numpy(rng.permutation(len(tr)))].split(cfg.batch_size):
            _, logit = head(u[idx], it[idx])
            loss = F.binary_cross_entropy_with_logits(logit, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_v = float(loss.detach())
    head.eval()
    with torch.no_grad():
        _, logit = head(u[held], it[held])
    return {"train_logloss": loss_v, "valid_auc": auc(y[held].numpy(), logit.numpy())}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties averaged)."""
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks over ties
    _, inv, counts = np.unique(sorted_scores, return_inverse=True, return_counts=True)
    csum = np.cumsum(counts)
    avg = csum - (counts - 1) / 2.0
    ranks[order] = avg[inv]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
