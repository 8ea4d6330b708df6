"""The LEARN model as one module (user tower, item tower, CVR head) for saving and loading."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from learn_core.models.cvr import CVRConfig, CVRHead
from learn_core.models.towers import ItemTower, TowerConfig, UserTower


@dataclass
class LearnConfig:
    tower: TowerConfig = field(default_factory=TowerConfig)
    cvr: CVRConfig = field(default_factory=CVRConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"tower": asdict(self.tower), "cvr": asdict(self.cvr)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LearnConfig:
        """Strict: unknown or missing keys raise ``TypeError`` (no silent defaults)."""
        if set(d) != {"tower", "cvr"}:
            raise TypeError(f"config keys {sorted(d)} != ['cvr', 'tower']")
        return cls(TowerConfig(**d["tower"]), CVRConfig(**d["cvr"]))


class LearnModel(nn.Module):
    def __init__(self, cfg: LearnConfig) -> None:
        super().__init__()
        if cfg.cvr.in_dim != cfg.tower.out_dim:
            raise ValueError("cvr.in_dim must equal tower.out_dim")
        self.cfg = cfg
        self.user_tower = UserTower(cfg.tower)
        self.item_tower = ItemTower(cfg.tower, self.user_tower)
        self.cvr_head = CVRHead(cfg.cvr)
