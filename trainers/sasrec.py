"""Train SASRec the usual way: BCE with one sampled negative per position, Adam, early stop on validation."""

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
    steps = -(-len(users) // cfg.batch_size)
    progress = Progress(steps * cfg.epochs, "sasrec")
    best, best_state, best_epoch, since, best_val = -1.0, None, -1, 0, {}
    t0 = time.monotonic()
    for epoch in range(cfg.epochs):
        model.train()
        for idx in torch.from_numpy(rng.permutation(len(users))).split(cfg.batch_size):
            x, p = inp[idx], pos[idx]
            n = warm_rows[torch.from_numpy(rng.integers(0, len(warm_rows), size=tuple(p.shape)))]
            h = model(x)
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
            "sasrec epoch %d valid hr@10 %.4f ndcg@10 %.4f", epoch, val["hr@10"], val["ndcg@10"]
        )
        if val["ndcg@10"] > best:
            best, best_epoch, since, best_val = val["ndcg@10"], epoch, 0, val
            best_state = copy.deepcopy(model.state_dict())
        else:
            since += 1
            if since >= cfg.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return SASRecResult(model, best_epoch, best_val, time.monotonic() - t0)
