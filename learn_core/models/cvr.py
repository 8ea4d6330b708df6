"""The CVR head: concat(user, item) -> MLP -> mid-emb -> conversion logit.

The ranking side reads both the mid-emb (as a feature) and the CVR score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class CVRConfig:
    in_dim: int = 64
    hidden: int = 128
    mid_dim: int = 64
    dropout: float = 0.1


class CVRHead(nn.Module):
    def __init__(self, cfg: CVRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mlp = nn.Sequential(
            nn.Linear(2 * cfg.in_dim, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.mid_dim),
        )
        self.out = nn.Linear(cfg.mid_dim, 1)

    def forward(self, user: Tensor, item: Tensor) -> tuple[Tensor, Tensor]:
        """``user, item [B, in_dim]`` -> ``(mid_emb [B, mid_dim], logit [B])``."""
        mid = self.mlp(torch.cat([user, item], dim=-1))
        return mid, self.out(torch.relu(mid)).squeeze(-1)
