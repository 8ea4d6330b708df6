"""Typed training entry points: ``train(cfg) -> TrainResult`` and the one way to save a model.

``learnrec train`` parses its flags into a ``TrainConfig`` and calls ``train``; the
retraining job trains on the feature store's history and saves through the same
``save_version``, so every manifest carries the serving contract
(``learn_core.contract.ServingConfig``: history length, pairing, content identity).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learn_core.contract import Pairing, ServingConfig

if TYPE_CHECKING:
    from learn_core.embedding.base import ContentEmbedder
    from learn_core.registry import ModelRegistry

log = logging.getLogger(__name__)


def save_version(
    registry: ModelRegistry,
    model: Any,
    serving: ServingConfig,
    *,
    data_window: dict[str, Any],
    metrics: dict[str, Any],
    parent_version: str | None,
    **extra: Any,
) -> str:
    """Store a trained ``LearnModel`` with its serving contract (unpromoted); its version."""
    return str(
        registry.save(
            model,
            content_model=serving.content_model,
            serving=serving,
            data_window=data_window,
            metrics=metrics,
            parent_version=parent_version,
            history_len=serving.history_len,
            **extra,
        )
    )


@dataclass(frozen=True)
class TrainConfig:
    """One ``learnrec train`` run (flags and ``LEARNREC_TRAIN_*`` resolved)."""

    dataset: str = "sample"
    data: Path | None = None
    epochs: int = 20
    cvr_epochs: int = 3
    seed: int = 0
    threads: int | None = None
    pairing: Pairing = "window"
    item_variant: int = 1
    registry: Path | None = None
    promote: bool = False


@dataclass
class TrainResult:
    version: str
    promoted: bool
    serving: ServingConfig
    test: dict[str, Any]
    cvr: dict[str, float] = field(default_factory=dict)


def train(cfg: TrainConfig, embedder: ContentEmbedder | None = None) -> TrainResult:
    """Train LEARN (towers, then the CVR head) on a data set, evaluate, register it."""
    import torch

    from learn_core.datasets import load_dataset
    from learn_core.embedding.identity import content_identity
    from learn_core.models import FrozenContent, LearnConfig, TowerConfig
    from learn_core.registry import ModelRegistry
    from trainers.content_cache import content_matrix
    from trainers.evaluation import eval_loop, summarise
    from trainers.learn import (
        CVRStageConfig,
        LearnTrainConfig,
        learn_score_fn,
        train_cvr_stage,
        train_learn,
    )
    from trainers.splits import leave_one_out

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = load_dataset(cfg.dataset, cfg.data)
    split = leave_one_out(ds, cold_fraction=0.1, seed=cfg.seed)
    if embedder is None:
        from learn_core.embedding.hf import HFEmbedder

        embedder = HFEmbedder()
    inputs = FrozenContent(torch.from_numpy(content_matrix(ds.items, embedder)))
    tcfg = LearnTrainConfig(
        model=LearnConfig(TowerConfig(content_dim=inputs.dim, item_variant=cfg.item_variant)),
        pairing=cfg.pairing,
        epochs=cfg.epochs,
        seed=cfg.seed,
    )
    serving = ServingConfig(tcfg.history_len, cfg.pairing, content_identity(embedder))
    res = train_learn(tcfg, split, inputs)
    cvr: dict[str, float] = {}
    if cfg.cvr_epochs:
        cvr = train_cvr_stage(
            res.model,
            inputs,
            split,
            tcfg.history_len,
            CVRStageConfig(epochs=cfg.cvr_epochs, seed=cfg.seed),
        )
    test = summarise(eval_loop(learn_score_fn(res.model, inputs, tcfg.history_len), split), split)
    times = ds.interactions["occurred_at"]
    reg = ModelRegistry(cfg.registry)
    version = save_version(
        reg,
        res.model,
        serving,
        data_window={"dataset": ds.name, "start": str(times.min()), "end": str(times.max())},
        metrics={"valid": res.valid, "test": test["all"], "cold": test["cold"], "cvr": cvr},
        parent_version=reg.current_version(),
    )
    if cfg.promote:
        reg.promote(version)
    return TrainResult(version, cfg.promote, serving, test, cvr)
