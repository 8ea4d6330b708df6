"""SASRec (Kang & McAuley, 2018) with ID embeddings, as the sequential baseline.

The layout follows the reference implementation: scaled item embeddings plus learned
positions, pre-norm blocks of causal self-attention and a point-wise feed-forward
network, padded positions zeroed after every block, a final LayerNorm, and item scores
as dot products with the (shared) input embedding table. Index 0 is padding, so
item ``i`` of the catalogue is row ``i + 1``. Sequences are left-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class SASRecConfig:
    n_items: int
    d: int = 50
    n_blocks: int = 2
    n_heads: int = 1
    max_len: int = 200
    dropout: float = 0.2


class _Block(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
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

    def forward(self, x: Tensor, causal: Tensor, keep: Tensor) -> Tensor:
        q = self.ln1(x)
        x = q + self.attn(q, x, x, attn_mask=causal, need_weights=False)[0]
        x = self.ln2(x)
        x = x + self.ff(x)
        return x * keep


class SASRec(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.items = nn.Embedding(cfg.n_items + 1, cfg.d, padding_idx=0)
        self.positions = nn.Embedding(cfg.max_len, cfg.d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_blocks))
        self.last_norm = nn.LayerNorm(cfg.d, eps=1e-8)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)

    def forward(self, seq: Tensor) -> Tensor:
        """``seq [B, L]`` of item rows (0 = pad) -> hidden states ``[B, L, d]``."""
        length = seq.shape[1]
        x = self.items(seq) * self.cfg.d**0.5
        x = x + self.positions(torch.arange(length, device=seq.device))[None]
        keep = (seq > 0).unsqueeze(-1).float()
        x = self.dropout(x) * keep
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).triu(1)
        for block in self.blocks:
            x = block(x, causal, keep)
        return self.last_norm(x)

    @torch.no_grad()
    def score_all(self, seq: Tensor) -> Tensor:
        """Scores of every catalogue item for the state after the last position, ``[B, n_items]``."""
        h = self.forward(seq[:, -self.cfg.max_len :])[:, -1]
        return h @ self.items.weight[1:].T
