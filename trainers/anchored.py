"""Train the content-anchored hybrid (``learn_core.models.anchored``) with full-softmax CE.

The recipe is SASRec+CE's (Klenitskiy & Vasilev, 2023): every position of each user's
newest ``max_len`` training items predicts the next one, with a softmax over every item
that has training interactions (an item never seen as a positive would only be pushed
down, so unseen ones stay out of it). Adam, early stop on validation NDCG@10. Added
for the hybrid: the ID corrections of a random ``id_dropout`` share of items are zeroed
at each step, on both sides of the tied layer, so the towers also learn to place and
score items from content alone, which is all a new item has.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from learn_core.models.anchored import (
    AnchoredConfig,
    AnchoredModel,
    AnchoredModelConfig,
    IdVocab,
    catalogue_logits,
)
from learn_core.models.cvr import CVRConfig
from trainers.distributed import SINGLE, DistContext
from trainers.evaluation import eval_loop
from trainers.learn import CVRStageConfig, fit_cvr_head
from trainers.loop import Progress
from trainers.metrics import ranking_metrics
from trainers.splits import Split

log = logging.getLogger(__name__)


@dataclass
class AnchoredTrainConfig:
    net: AnchoredConfig = field(default_factory=AnchoredConfig)
    #: P(an item's ID correction is zeroed) at each step, on input and output alike.
    id_dropout: float = 0.0
    use_ids: bool = True  # False: the content-only ablation (no ID table)
    #: every training interaction a target (each history cut in windows of max_len);
    #: False: each user's newest max_len + 1 items only, as SASRec trains
    all_chunks: bool = False
    cvr_weight: float = 0.0  # > 0: the CVR head trained jointly (auxiliary BCE)
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    epochs: int = 200
    eval_every: int = 2
    patience: int = 5  # evaluations without validation gain
    seed: int = 0
    time_budget_s: float | None = None  # stop after the evaluation that crosses this

    def __post_init__(self) -> None:
        if not 0.0 <= self.id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {self.id_dropout}")
        if self.cvr_weight < 0:
            raise ValueError(f"cvr_weight must be >= 0, got {self.cvr_weight}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AnchoredResult:
    model: AnchoredModel
    content: torch.Tensor  # [N, D] every item's content, item-index order
    id_rows: torch.Tensor  # [N] each item's ID row, -1: none (unseen in training)
    best_epoch: int
    valid: dict[str, float | int]
    history: list[dict[str, float]]
    train_seconds: float

    def item_vectors(self) -> torch.Tensor:
        """Every item's served vector, ``[N, d]``."""
        return self.model.item_tower.encode_items(self.content, id_rows=self.id_rows)


def id_rows_for(train_counts: np.ndarray, row_items: list[str]) -> tuple[np.ndarray, list[str]]:
    """ID row of each content row, and the item of each ID row.

    Rows of items with training interactions get one ID row per *item* (a retrained
    catalogue may hold an item twice, with the content it had at two times); the rest
    get -1 and are scored from their content alone.
    """
    rows = np.full(len(train_counts), -1, dtype=np.int64)
    vocab: dict[str, int] = {}
    for r in np.flatnonzero(train_counts > 0):
        rows[r] = vocab.setdefault(row_items[r], len(vocab))
    return rows, list(vocab)


def training_sequences(
    split: Split, max_len: int, all_chunks: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(items, conversion labels) of each training sequence: every position predicts the next.

    SASRec's way (``all_chunks=False``) keeps each user's newest ``max_len + 1`` items, so
    a long history trains on its end only. ``all_chunks`` cuts the whole history into
    consecutive chunks of ``max_len + 1`` (sharing one item at each seam), newest first:
    every training interaction is a target once, with a window no longer than serving's.
    """
    out = []
    for seq, conv in zip(split.train, split.train_conv, strict=True):
        if len(seq) < 2:
            continue
        end = len(seq)
        while end >= 2:
            start = max(0, end - max_len - 1)
            out.append((seq[start:end], conv[start:end]))
            if not all_chunks:
                break
            end = start + 1
    return out


def left_pad(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """Item indices right-aligned in ``length`` columns, ``-1`` before them; newest kept."""
    out = np.full((len(seqs), length), -1, dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[r, -len(s) :] = s
    return out


def anchored_score_fn(model: AnchoredModel, content: torch.Tensor, id_rows: torch.Tensor):
    """Scores for the evaluation loop: user vector after the history · every item vector."""
    model.eval()
    with torch.no_grad():
        inputs, items = model.item_tower.both(model.item_tower.whiten(content), id_rows)
    max_len = model.cfg.net.max_len

    def score(users: np.ndarray, hists: list[np.ndarray]) -> np.ndarray:
        ids = torch.from_numpy(left_pad(hists, max_len))
        with torch.no_grad():
            h = model.user_tower.forward_rows(inputs, ids)[:, -1]
        return (h @ items.T).numpy()

    return score


def build_model(
    cfg: AnchoredTrainConfig,
    content: np.ndarray,
    train_counts: np.ndarray,
    row_items: list[str],
) -> tuple[AnchoredModel, torch.Tensor, torch.Tensor]:
    """The untrained model, its whitening fitted on the training items' content, its ID
    vocabulary set; with the content matrix and each row's ID row."""
    if cfg.use_ids:
        rows, vocab = id_rows_for(train_counts, row_items)
    else:
        rows, vocab = np.full(len(train_counts), -1, dtype=np.int64), []
    net = AnchoredConfig(
        **(
            asdict(cfg.net)
            | {
                "content_dim": content.shape[1],
                # a content model narrower than the whitening keeps all its dimensions
                "whiten_dim": min(cfg.net.whiten_dim, content.shape[1]),
                "n_ids": len(vocab),
            }
        )
    )
    model = AnchoredModel(AnchoredModelConfig(net, CVRConfig(in_dim=net.out_dim)))
    model.item_tower.vocab = IdVocab(vocab)
    matrix = torch.from_numpy(np.ascontiguousarray(content, dtype=np.float32))
    model.item_tower.fit_whitening(matrix[torch.from_numpy(train_counts > 0)])
    return model, matrix, torch.from_numpy(rows)


class _StepLoss(torch.nn.Module):
    """One step's loss as a module, so that ``DistributedDataParallel`` can wrap it.

    Returns the sum of the softmax CE (plus the weighted CVR BCE) over the rows' targets,
    times ``scale``: 1 / targets for one process, the batch mean.
    """

    def __init__(
        self,
        model: AnchoredModel,
        whitened: torch.Tensor,
        id_rows: torch.Tensor,
        allowed: torch.Tensor,
        conv: torch.Tensor,
        cvr_weight: float,
    ) -> None:
        super().__init__()
        self.model = model
        self.whitened, self.id_rows, self.allowed = whitened, id_rows, allowed
        self.conv, self.cvr_weight = conv, cvr_weight

    def forward(
        self,
        x: torch.Tensor,
        p: torch.Tensor,
        rows: torch.Tensor,
        drop: torch.Tensor | None,
        scale: float,
    ) -> torch.Tensor:
        model = self.model
        # every item's tower input and vector, this step
        table, items = model.item_tower.both(self.whitened, self.id_rows, drop)
        width = int((x >= 0).sum(1).max())  # left-padded: drop the all-padding columns
        x, p = x[:, -width:], p[:, -width:]
        h = model.user_tower.forward_rows(table, x)
        valid = p >= 0
        hv = h[valid]
        logits = catalogue_logits(hv, items).masked_fill(~self.allowed[None, :], float("-inf"))
        loss = F.cross_entropy(logits, p[valid], reduction="sum")
        if self.cvr_weight > 0:
            _, logit = model.cvr_head(hv, items[p[valid]])
            loss = loss + self.cvr_weight * F.binary_cross_entropy_with_logits(
                logit, self.conv[rows][:, -width:][valid].float(), reduction="sum"
            )
        return loss * scale


def train_anchored(
    cfg: AnchoredTrainConfig,
    split: Split,
    content: np.ndarray,
    row_items: list[str] | None = None,
    dist: DistContext = SINGLE,
) -> AnchoredResult:
    """Train on ``split`` with early stopping on validation NDCG@10.

    ``content`` has one row per split item; ``row_items`` names the item of each row
    (default ``split.item_ids``), which keys the ID vocabulary. ``dist``: this process's
    rank under ``torchrun`` (``trainers.distributed``); each rank trains on its share of
    every batch, rank 0 alone evaluates and returns the best state.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if content.shape[0] != split.n_items:
        raise ValueError(f"content has {content.shape[0]} rows for {split.n_items} items")
    counts = split.train_counts()
    model, matrix, id_rows = build_model(cfg, content, counts, row_items or split.item_ids)
    max_len = model.cfg.net.max_len
    n_ids = model.cfg.net.n_ids
    seqs = training_sequences(split, max_len, cfg.all_chunks)
    if not seqs:
        raise ValueError("no user has two training interactions")
    inp = torch.from_numpy(left_pad([s[:-1] for s, _ in seqs], max_len))
    pos = torch.from_numpy(left_pad([s[1:] for s, _ in seqs], max_len))
    conv = torch.from_numpy(left_pad([c[1:].astype(np.int64) for _, c in seqs], max_len))
    users = seqs
    with torch.no_grad():
        whitened = model.item_tower.whiten(matrix)
    allowed = torch.from_numpy(counts > 0)  # the softmax: items with training interactions
    step = dist.wrap(_StepLoss(model, whitened, id_rows, allowed, conv, cfg.cvr_weight))
    opt = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )
    steps = -(-len(users) // cfg.batch_size)
    progress = Progress(steps * cfg.epochs, "anchored") if dist.main else None
    best, best_state, best_epoch, since, best_val = -1.0, None, -1, 0, {}
    history: list[dict[str, float]] = []
    t0 = time.monotonic()
    for epoch in range(cfg.epochs):
        model.train()
        total, n = 0.0, 0
        for idx in torch.from_numpy(rng.permutation(len(users))).split(cfg.batch_size):
            drop = None
            if cfg.id_dropout > 0 and n_ids:
                drop = torch.from_numpy(rng.random(n_ids) < cfg.id_dropout)
            # The loss is a sum over this rank's targets scaled by world / targets in the
            # whole batch: DDP's gradient average is then one process's batch mean.
            targets = int((pos[idx] >= 0).sum())
            rows, live = dist.shard(idx)
            scale = dist.world / targets if live else 0.0
            loss = step(inp[rows], pos[rows], rows, drop, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            share = float(loss.detach()) / dist.world  # this rank's part of the batch mean
            total += share
            n += 1
            if progress is not None:
                progress.step(loss=share * dist.world)
        total = dist.sum(total)
        if (epoch + 1) % cfg.eval_every and epoch + 1 != cfg.epochs:
            continue
        stop = False
        if dist.main:  # rank 0 alone evaluates; the others wait for its decision
            ranks = eval_loop(anchored_score_fn(model, matrix, id_rows), split, "valid")
            val = ranking_metrics(ranks[~np.isnan(ranks)])
            history.append(
                {"epoch": epoch, "loss": total / max(n, 1), "valid_hr@10": val["hr@10"],
                 "valid_ndcg@10": val["ndcg@10"]}
            )  # fmt: skip
            log.info(
                "anchored epoch %d loss %.4f valid hr@10 %.4f ndcg@10 %.4f (%.0fs)",
                epoch, total / max(n, 1), val["hr@10"], val["ndcg@10"], time.monotonic() - t0,
            )  # fmt: skip
            if val["ndcg@10"] > best:
                best, best_epoch, since, best_val = val["ndcg@10"], epoch, 0, val
                best_state = copy.deepcopy(model.state_dict())
            else:
                since += 1
                stop = since >= cfg.patience
            over = cfg.time_budget_s is not None and time.monotonic() - t0 > cfg.time_budget_s
            if over and not stop:
                log.info(
                    "anchored: time budget %.0fs reached after epoch %d", cfg.time_budget_s, epoch
                )
            stop = stop or over
        if dist.agree(stop):
            break
    if not dist.main:  # only rank 0 kept the best state; the others' model is not used
        return AnchoredResult(model, matrix, id_rows, -1, {}, history, time.monotonic() - t0)
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return AnchoredResult(
        model, matrix, id_rows, best_epoch, best_val, history, time.monotonic() - t0
    )


def anchored_cvr_stage(
    result: AnchoredResult, split: Split, cfg: CVRStageConfig
) -> dict[str, float | str | None]:
    """The CVR head on the frozen towers: (user vector before an interaction, that item's
    vector) pairs labelled by ``is_conversion``, as LEARN's separate CVR stage.

    One causal pass per user gives the state before every training interaction of the
    newest ``max_len`` (``train_cvr_stage`` re-embeds each prefix; the same pairs).
    """
    model = result.model
    model.eval()
    max_len = model.cfg.net.max_len
    pairs = [(s, c) for s, c in zip(split.train, split.train_conv, strict=True) if len(s) >= 2]
    if not pairs:
        raise ValueError("no (history, item) pairs to train the CVR head on")
    inp = torch.from_numpy(left_pad([s[:-1] for s, _ in pairs], max_len))
    nxt = torch.from_numpy(left_pad([s[1:] for s, _ in pairs], max_len))
    conv = torch.from_numpy(left_pad([c[1:].astype(np.int64) for _, c in pairs], max_len))
    with torch.no_grad():
        tower = model.item_tower
        table, items = tower.both(tower.whiten(result.content), result.id_rows)
        h = torch.cat([model.user_tower.forward_rows(table, x) for x in inp.split(1024)])
    valid = nxt >= 0
    return fit_cvr_head(model.cvr_head, h[valid], items[nxt[valid]], conv[valid].float(), cfg)
