"""LEARN's training task: dense all-action InfoNCE with in-batch negatives (+ optional CVR BCE).

The towers only return embeddings; this task pairs them and adds the loss
(TorchRec's ``TwoTowerTrainTask`` pattern).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learn_core.models import FrozenContent, HybridItemInputs, ItemIdEmbedding, LearnModel

ItemInputs = FrozenContent | ItemIdEmbedding | HybridItemInputs


def info_nce(
    queries: Tensor,
    q_valid: Tensor,
    cands: Tensor,
    c_valid: Tensor,
    cand_items: Tensor,
    user_items: Tensor,
    temperature: Tensor | float,
    cand_logq: Tensor | None = None,
) -> Tensor:
    """Dense all-action InfoNCE with in-batch negatives.

    ``queries [B, K, E]`` are user states at K history positions, ``cands [B, T, E]``
    the embeddings of each user's T target items. Every valid (query, own target)
    pair is a positive; the candidates of all users form the softmax. A candidate
    whose item is one of the query user's own items (``user_items [B, M]``, -1 =
    padding), other than the positive itself, is masked rather than counted as a
    negative. Per pair: ``-s_pos + log(exp(s_pos) + sum_neg exp(s_neg))``.

    ``cand_logq [B, T]``, if given, is subtracted from every candidate's logit (the
    logQ correction of Yi et al., 2019): in-batch negatives are drawn in proportion to
    popularity, and without it the model learns to demote popular items.
    """
    b, k, e = queries.shape
    t = cands.shape[1]
    logits = queries.reshape(b * k, e) @ cands.reshape(b * t, e).T / temperature  # [BK, BT]
    pos = torch.einsum("bke,bte->bkt", queries, cands) / temperature
    if cand_logq is not None:
        logits = logits - cand_logq.reshape(1, b * t)
        pos = pos - cand_logq[:, None, :]
    flat_items = cand_items.reshape(1, 1, b * t)
    own = (flat_items == user_items[:, :, None]).any(1)  # [B, BT]
    blocked = own | ~c_valid.reshape(1, b * t)
    blocked = blocked.repeat_interleave(k, dim=0)  # [BK, BT]
    lse_neg = torch.logsumexp(logits.masked_fill(blocked, -math.inf), dim=1).reshape(b, k, 1)
    loss = -pos + torch.logaddexp(lse_neg, pos)
    pair_valid = q_valid[:, :, None] & c_valid[:, None, :]
    return (loss * pair_valid).sum() / pair_valid.sum().clamp(min=1)


def sliding_info_nce(
    queries: Tensor,
    q_user: Tensor,
    pos_cols: Tensor,
    cands: Tensor,
    own: Tensor,
    temperature: Tensor | float,
    cand_logq: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """InfoNCE for the sliding pairing: every history position against the items that follow it.

    ``queries [N, E]`` are user states, ``q_user [N]`` the batch row each came from,
    ``pos_cols [N, T]`` the candidate column of each of the query's positives (-1 =
    none). ``cands [U, E]`` embeds the batch's *unique* items, so the softmax runs over
    every distinct item of the other users' windows; ``own [B, U]`` marks each row's own
    items, which are masked as negatives (they are its positives at other offsets or
    items it has already seen). ``cand_logq [U]`` is the log of each item's chance to be
    in the batch at all, subtracted from its logit (sampled softmax with unique
    candidates). ``weights [N]``, if given, weigh each query's pairs (recency).
    """
    logits = queries @ cands.T / temperature  # [N, U]
    if cand_logq is not None:
        logits = logits - cand_logq[None, :]
    lse_neg = torch.logsumexp(logits.masked_fill(own[q_user], -math.inf), dim=1)  # [N]
    valid = pos_cols >= 0
    pos = logits.gather(1, pos_cols.clamp(min=0))  # [N, T]
    loss = -pos + torch.logaddexp(lse_neg[:, None], pos)
    w = valid.float() if weights is None else valid * weights[:, None]
    return (loss * w).sum() / w.sum().clamp(min=1e-12)


def log_inclusion(log_q: Tensor, draws: int) -> Tensor:
    """log P(item appears among ``draws`` popularity-weighted draws) = log(1 - (1 - q)^draws)."""
    q = log_q.exp().clamp(max=1 - 1e-7)
    return torch.log(-torch.expm1(draws * torch.log1p(-q))).clamp(min=-80.0)


@dataclass
class LearnTaskConfig:
    temperature: float = 0.07
    learn_temperature: bool = False
    cvr_weight: float = 0.0  # > 0: joint training with the CVR BCE as an auxiliary loss
    logq_correction: bool = True
    # Sliding pairing's softmax: "in_batch" runs over the batch's distinct items (with the
    # logQ correction); "catalogue" over every training item, embedded in one pass per step
    # (item variants 2 and 3 read each item alone), so no sampling bias to correct.
    negatives: str = "in_batch"

    def __post_init__(self) -> None:
        if self.negatives not in ("in_batch", "catalogue"):
            raise ValueError(f"negatives must be 'in_batch' or 'catalogue', got {self.negatives!r}")


class LearnTrainTask(nn.Module):
    """Adds LEARN's loss to the model; ``inputs`` maps item indices to tower inputs."""

    def __init__(self, model: LearnModel, inputs: ItemInputs, cfg: LearnTaskConfig) -> None:
        super().__init__()
        self.model, self.inputs, self.cfg = model, inputs, cfg
        # log of each item's share of training interactions, for the logQ correction
        self.register_buffer("log_q", torch.zeros(0), persistent=False)
        # items the catalogue softmax may use as negatives: those with training interactions
        self.register_buffer("trained", torch.zeros(0, dtype=torch.bool), persistent=False)
        log_tau = torch.tensor(math.log(cfg.temperature))
        if cfg.learn_temperature:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)

    def set_item_counts(self, counts: Tensor) -> None:
        self.log_q = torch.log(counts.float().clamp(min=1.0) / counts.float().sum().clamp(min=1.0))
        self.trained = counts > 0

    @property
    def temperature(self) -> Tensor:
        return self.log_tau.exp().clamp(0.01, 1.0)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """A ``window`` batch (hist/tgt/qpos) or a ``sliding`` batch (chunk/conv, see trainers.learn)."""
        if "chunk" in batch:
            return self._sliding(batch)
        return self._window(batch)

    def _sliding(self, batch: dict[str, Tensor]) -> Tensor:
        """``chunk [B, H]`` history and ``tail [B, T]`` the items after it (-1 pad, left-aligned),
        ``conv [B, H+T]`` their conversion labels.

        Position i's positives are the T items that follow it in chunk + tail. Item
        embeddings come from the item tower one item at a time (variants 2 and 3), once
        per distinct item in the batch. With ``cvr_weight`` the CVR head learns from each
        (position, next item) pair and that item's conversion label.
        """
        hist = batch["chunk"]
        full = torch.cat([hist, batch["tail"]], dim=1)  # [B, H+T]
        b, h = hist.shape
        t = full.shape[1] - h
        valid = full >= 0
        states = self.model.user_tower(self.inputs(hist), valid[:, :h])  # [B, H, E]
        catalogue = self.cfg.negatives == "catalogue"
        if catalogue:
            if not len(self.trained):
                raise RuntimeError("negatives='catalogue' needs set_item_counts() first")
            uniq = torch.arange(len(self.trained))
            inv = full[valid]
        else:
            uniq, inv = torch.unique(full[valid], return_inverse=True)
        cands = self.model.item_tower.embed(self.inputs(uniq))  # [U, E]
        cols = torch.full_like(full, -1)
        cols[valid] = inv  # candidate column of every chunk slot
        rows = torch.arange(b)[:, None].expand_as(full)
        own = torch.zeros(b, len(uniq), dtype=torch.bool)
        own[rows[valid], inv] = True
        if catalogue:
            own |= ~self.trained[None, :]  # held-out (cold) items are no negatives
        # positives of position i: slots i+1..i+T
        nxt = torch.stack([cols[:, 1 + j : 1 + j + h] for j in range(t)], dim=-1)  # [B, H, T]
        q_mask = valid[:, :h] & (nxt[..., 0] >= 0)
        q_user = torch.arange(b)[:, None].expand(b, h)[q_mask]
        logq = None
        if self.cfg.logq_correction and len(self.log_q) and not catalogue:
            logq = log_inclusion(self.log_q[uniq], int(valid.sum()))
        qweight = batch["qweight"][q_mask] if "qweight" in batch else None
        loss = sliding_info_nce(
            states[q_mask], q_user, nxt[q_mask], cands, own, self.temperature, logq, qweight
        )
        if self.cfg.cvr_weight > 0:
            nxt_conv = batch["conv"][:, 1 : 1 + h].float()[q_mask]
            _, logit = self.model.cvr_head(states[q_mask], cands[nxt[q_mask][:, 0]])
            loss = loss + self.cfg.cvr_weight * F.binary_cross_entropy_with_logits(logit, nxt_conv)
        return loss

    def _window(self, batch: dict[str, Tensor]) -> Tensor:
        """``batch``: hist [B,H], tgt [B,T] item indices (-1 pad), qpos [B,K] (-1 pad), tgt_conv [B,T]."""
        hist, tgt, qpos = batch["hist"], batch["tgt"], batch["qpos"]
        h_valid, t_valid, q_valid = hist >= 0, tgt >= 0, qpos >= 0
        states = self.model.user_tower(self.inputs(hist), h_valid)  # [B, H, E]
        queries = states.gather(1, qpos.clamp(min=0)[..., None].expand(-1, -1, states.shape[-1]))
        cands = self.model.item_tower(self.inputs(tgt), t_valid)  # [B, T, E]
        user_items = torch.cat([hist, tgt], dim=1)
        logq = (
            self.log_q[tgt.clamp(min=0)] if self.cfg.logq_correction and len(self.log_q) else None
        )
        loss = info_nce(queries, q_valid, cands, t_valid, tgt, user_items, self.temperature, logq)
        if self.cfg.cvr_weight > 0:
            last = states[torch.arange(hist.shape[0]), h_valid.sum(1) - 1]  # [B, E]
            user = last[:, None, :].expand_as(cands)
            _, logit = self.model.cvr_head(
                user.reshape(-1, user.shape[-1]), cands.reshape(-1, cands.shape[-1])
            )
            bce = F.binary_cross_entropy_with_logits(
                logit, batch["tgt_conv"].reshape(-1).float(), reduction="none"
            )
            mask = t_valid.reshape(-1).float()
            loss = loss + self.cfg.cvr_weight * (bce * mask).sum() / mask.sum().clamp(min=1)
        return loss
