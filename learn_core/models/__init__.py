"""Recommendation models: plain PyTorch modules with dataclass configs, no I/O."""

from learn_core.models.cvr import CVRConfig, CVRHead
from learn_core.models.learn import LearnConfig, LearnModel
from learn_core.models.popularity import Popularity
from learn_core.models.sasrec import SASRec, SASRecConfig
from learn_core.models.towers import (
    TOWER_SCHEMA,
    FrozenContent,
    HybridItemInputs,
    ItemIdEmbedding,
    ItemTower,
    TowerConfig,
    UserTower,
)

__all__ = [
    "TOWER_SCHEMA",
    "CVRConfig",
    "CVRHead",
    "FrozenContent",
    "HybridItemInputs",
    "ItemIdEmbedding",
    "ItemTower",
    "LearnConfig",
    "LearnModel",
    "Popularity",
    "SASRec",
    "SASRecConfig",
    "TowerConfig",
    "UserTower",
]
