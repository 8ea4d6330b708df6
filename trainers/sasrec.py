"""Train SASRec: BCE with one sampled negative per position (the original), or full-softmax CE.

``loss="ce"`` is SASRec+CE (Klenitskiy & Vasilev, RecSys 2023): the same model, with a
softmax over every training item at every position, which is the strong form of the
baseline. Adam, early stop on validation NDCG@10 either way.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from learn_core.models import SASRec, SASRecConfig
from trainers.evaluation import eval_loop
from trainers.loop import Progress
from trainers.metrics import ranking_metrics
from trainers.splits import Split

log = logging.getLogger(__name__)


@dataclass
class SASRecTrainConfig:
    d: int = 50
    n_blocks: int = 2
    n_heads: int = 1
    max_len: int = 200
    dropout: float = 0.2
    batch_size: int = 128
    lr: float = 1e-3
    epochs: int = 200
    eval_every: int = 5
    patience: int = 4  # evaluations without validation gain
    seed: int = 0
    loss: str = "bce"  # "bce": one sampled negative per position; "ce": full softmax
    time_budget_s: float | None = None  # stop after the evaluation that crosses this

    def __post_init__(self) -> None:
        if self.loss not in ("bce", "ce"):
            raise ValueError(f"loss must be 'bce' or 'ce', got {self.loss!r}")


@dataclass
class SASRecResult:
    model: SASRec
    best_epoch: int
    valid: dict[str, float | int]
    train_seconds: float


def _left_pad(seqs: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[r, -len(s) :] = s + 1  # row 0 is padding
    return out


def sasrec_ce_loss(h: torch.Tensor, pos: torch.Tensor, items: torch.Tensor, allowed: torch.Tensor):
    """Full-softmax cross-entropy at every position.

    ``h [B, L, d]`` hidden states, ``pos [B, L]`` next-item rows (0 = padding, skipped),
    ``items [n_items + 1, d]`` the embedding table (row 0 padding), ``allowed [n_items]``
    the items the softmax runs over (training items: held-out cold items are not
    negatives, as no model may see them). Mean over the non-padding positions.
    """
    valid = pos > 0
    logits = h[valid] @ items[1:].T  # [M, n_items]
    logits = logits.masked_fill(~allowed[None, :], float("-inf"))
    return F.cross_entropy(logits, pos[valid] - 1)


def sasrec_score_fn(model: SASRec, max_len: int):
    model.eval()

    def score(users: np.ndarray, hists: list[np.ndarray]) -> np.ndarray:
        return model.score_all(torch.from_numpy(_left_pad(hists, max_len))).numpy()

    return score


def train_sasrec(cfg: SASRecTrainConfig, split: Split) -> SASRecResult:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = SASRec(
        SASRecConfig(split.n_items, cfg.d, cfg.n_blocks, cfg.n_heads, cfg.max_len, cfg.dropout)
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    users = [s for s in split.train if len(s) >= 2]
    inp = torch.from_numpy(_left_pad([s[:-1] for s in users], cfg.max_len))
    pos = torch.from_numpy(_left_pad([s[1:] for s in users], cfg.max_len))
    warm_rows = torch.from_numpy(np.flatnonzero(~split.cold) + 1)  # negatives: training items only
    allowed = torch.from_numpy(~split.cold)
    steps = -(-len(users) // cfg.batch_size)
    progress = Progress(steps * cfg.epochs, "sasrec")
    best, best_state, best_epoch, since, best_val = -1.0, None, -1, 0, {}
    t0 = time.monotonic()
    for epoch in range(cfg.epochs):
        model.train()
        for idx in torch.from_numpy(rng.permutation(len(users))).split(cfg.batch_size):
            x, p = inp[idx], pos[idx]
            h = model(x)
            if cfg.loss == "ce":
                loss = sasrec_ce_loss(h, p, model.items.weight, allowed)
            else:
                n = warm_rows[
                    torch.from_numpy(rng.integers(0, len(warm_rows), size=tuple(p.shape)))
                ]
                pl = (h * model.items(p)).sum(-1)
                nl = (h * model.items(n)).sum(-1)
                valid = (p > 0).float()
                loss = F.binary_cross_entropy_with_logits(
                    pl, torch.ones_like(pl), reduction="none"
                ) + F.binary_cross_entropy_with_logits(nl, torch.zeros_like(nl), reduction="none")
                loss = (loss * valid).sum() / valid.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            progress.step(loss=float(loss.detach()))
        if (epoch + 1) % cfg.eval_every and epoch + 1 != cfg.epochs:
            continue
        ranks = eval_loop(sasrec_score_fn(model, cfg.max_len), split, "valid")
        val = ranking_metrics(ranks[~np.isnan(ranks)])
        log.info(
            "sasrec-%s epoch %d valid hr@10 %.4f ndcg@10 %.4f (%.0fs)",
            cfg.loss,
            epoch,
            val["hr@10"],
            val["ndcg@10"],
            time.monotonic() - t0,
        )
        if val["ndcg@10"] > best:
            best, best_epoch, since, best_val = val["ndcg@10"], epoch, 0, val
            best_state = copy.deepcopy(model.state_dict())
        else:
            since += 1
            if since >= cfg.patience:
                break
        if cfg.time_budget_s is not None and time.monotonic() - t0 > cfg.time_budget_s:
            log.info("sasrec: time budget %.0fs reached after epoch %d", cfg.time_budget_s, epoch)
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return SASRecResult(model, best_epoch, best_val, time.monotonic() - t0)
