"""SASRec's user tower (Kang & McAuley, 2018) and the window helpers of the anchored hybrid.

Scaled item vectors plus learned positions counted from the window's right end,
pre-norm causal self-attention blocks, padded positions zeroed after every block, a
final LayerNorm. Windows are left-padded; ``-1`` (or ``valid=False``) marks padding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from learn_core.models.anchored import AnchoredConfig


class _Block(nn.Module):
    def __init__(self, cfg: AnchoredConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d, eps=1e-8)
        self.attn = nn.MultiheadAttention(cfg.d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(cfg.d, eps=1e-8)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d, cfg.d),
            nn.Dropout(cfg.dropout),
            nn.ReLU(),
            nn.Linear(cfg.d, cfg.d),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: Tensor, mask: Tensor, keep: Tensor) -> Tensor:
        q = self.ln1(x)
        x = q + self.attn(q, x, x, attn_mask=mask, need_weights=False)[0]
        x = self.ln2(x)
        return (x + self.ff(x)) * keep


class SequenceTower(nn.Module):
    """User tower: item vectors of a left-padded window -> the user's vector per position."""

    def __init__(self, cfg: AnchoredConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.positions = nn.Embedding(cfg.max_len, cfg.d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_blocks))
        self.last_norm = nn.LayerNorm(cfg.d, eps=1e-8)

    def forward(self, vectors: Tensor, valid: Tensor) -> Tensor:
        """``vectors [B, L, d]``, ``valid [B, L]`` (left-padded) -> ``[B, L, d]``."""
        b, length, _ = vectors.shape
        if length > self.cfg.max_len:
            raise ValueError(f"window length {length} > max_len {self.cfg.max_len}")
        keep = valid.unsqueeze(-1).to(vectors.dtype)
        # Positions count from the window's right end, so a left-padded window of any
        # width gives the same result (SASRec's absolute positions, right-aligned).
        pos = torch.arange(self.cfg.max_len - length, self.cfg.max_len, device=vectors.device)
        x = vectors * self.cfg.d**0.5 + self.positions(pos)[None]
        x = self.dropout(x) * keep
        causal = torch.ones(length, length, dtype=torch.bool, device=vectors.device).triu(1)
        # A padded query attends to itself only, so no softmax row is all blocked.
        mask = causal[None] | ~valid[:, None, :]
        mask = mask & ~torch.eye(length, dtype=torch.bool, device=vectors.device)[None]
        mask = mask.repeat_interleave(self.cfg.n_heads, dim=0)
        for block in self.blocks:
            x = block(x, mask, keep)
        return self.last_norm(x)


def recency_mean(x: Tensor, valid: Tensor, decay: float) -> Tensor:
    """``x [B, L, k]`` -> at each position, the mean of the valid rows up to it weighted
    ``decay ** steps back``, ``[B, L, k]`` (zeros before the first valid row)."""
    length = x.shape[1]
    pos = torch.arange(length, device=x.device)
    age = pos[:, None] - pos[None, :]
    w = torch.where(age >= 0, decay ** age.clamp(min=0).to(x.dtype), torch.zeros((), dtype=x.dtype))
    w = w[None] * valid[:, None, :].to(x.dtype)  # [B, L(now), L(past)]
    return (w @ x) / w.sum(-1, keepdim=True).clamp(min=1e-12)


def left_align_right(ids: Tensor, width: int) -> Tensor:
    """Each row's valid entries (``>= 0``), in order, packed to the right of ``width`` columns
    (left-padded with -1); a row with more keeps its newest ``width``."""
    valid = ids >= 0
    after = valid.flip(1).long().cumsum(1).flip(1)  # valid entries at or after each column
    slot = width - after  # destination column of each valid entry
    keep = valid & (slot >= 0)
    out = torch.full((ids.shape[0], width), -1, dtype=ids.dtype, device=ids.device)
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(ids)
    out[rows[keep], slot[keep]] = ids[keep]
    return out
