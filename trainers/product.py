"""One way to train any named recipe: LEARN's towers or the content-anchored hybrid.

``fit(recipe, split, content, ...) -> Fitted`` is what ``learnrec train``, the
retraining job and ``bench.quality``'s ``product`` model call, so the benchmark
measures the model the product trains and serves. ``Fitted`` carries the trained
model (``LearnModel`` or ``AnchoredModel``: both have ``user_tower``, ``item_tower`` and
``cvr_head``), its validation figures, the offline evaluator's score function and the
separate CVR stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trainers.distributed import SINGLE, DistContext
from trainers.evaluation import ScoreFn
from trainers.learn import CVRStageConfig
from trainers.recipe import AnchoredRecipe, AnyRecipe
from trainers.splits import Split


@dataclass
class Fitted:
    recipe: AnyRecipe
    model: Any
    best_epoch: int
    valid: dict[str, float | int]
    history: list[dict[str, float]]
    train_seconds: float
    #: The user tower's window as trained (the serving contract's ``history_len``).
    history_len: int
    #: The training config as JSON (benchmark reports, manifests).
    settings: dict[str, Any] = field(default_factory=dict)
    _score: Callable[[], ScoreFn] | None = field(default=None, repr=False)
    _cvr: Callable[[Split, CVRStageConfig], dict[str, float | str | None]] | None = field(
        default=None, repr=False
    )

    def score_fn(self) -> ScoreFn:
        """``(users, histories of split item indices) -> scores over the split's items``."""
        assert self._score is not None
        return self._score()

    def cvr_stage(self, split: Split, cfg: CVRStageConfig) -> dict[str, float | str | None]:
        """Fit the CVR head on the frozen towers; its training log-loss and validation AUC."""
        assert self._cvr is not None
        return self._cvr(split, cfg)


def fit(
    recipe: AnyRecipe,
    split: Split,
    content: np.ndarray,
    *,
    epochs: int,
    seed: int = 0,
    row_items: list[str] | None = None,
    configure: Callable[[Any], Any] | None = None,
    dist: DistContext = SINGLE,
) -> Fitted:
    """Train ``recipe`` on ``split`` (``content``: one row per split item).

    ``row_items`` names each row's item (the hybrid keys its ID table by it; default
    ``split.item_ids``). ``configure(cfg) -> cfg`` adjusts the recipe's training config
    (budget, window) before training: ``LearnTrainConfig`` or ``AnchoredTrainConfig``.
    ``dist``: this rank under ``torchrun`` (content-anchored recipes only; on ranks
    other than 0 the result is not evaluated and not meant to be saved).
    """
    if isinstance(recipe, AnchoredRecipe):
        return _fit_anchored(recipe, split, content, epochs, seed, row_items, configure, dist)
    if dist.active:
        raise ValueError(
            f"recipe {recipe.name!r} trains LEARN's towers, which train in one process only; "
            "data-parallel training (torchrun) trains the content-anchored recipes"
        )
    return _fit_towers(recipe, split, content, epochs, seed, configure)


def _fit_anchored(
    recipe: AnchoredRecipe,
    split: Split,
    content: np.ndarray,
    epochs: int,
    seed: int,
    row_items: list[str] | None,
    configure: Callable[[Any], Any] | None,
    dist: DistContext,
) -> Fitted:
    from trainers.anchored import anchored_cvr_stage, anchored_score_fn, train_anchored

    cfg = recipe.train_config(epochs, seed)
    if configure is not None:
        cfg = configure(cfg)
    res = train_anchored(cfg, split, content, row_items, dist)
    return Fitted(
        recipe,
        res.model,
        res.best_epoch,
        res.valid,
        res.history,
        res.train_seconds,
        res.model.cfg.net.max_len,
        cfg.to_dict(),
        lambda: anchored_score_fn(res.model, res.content, res.id_rows),
        lambda on, c: anchored_cvr_stage(res, on, c),
    )


def _fit_towers(
    recipe: Any,
    split: Split,
    content: np.ndarray,
    epochs: int,
    seed: int,
    configure: Callable[[Any], Any] | None,
) -> Fitted:
    from trainers.learn import learn_score_fn, train_cvr_stage, train_learn

    inputs = recipe.item_inputs(content, split.train_counts())
    cfg = recipe.train_config(inputs.dim, epochs, seed)
    if configure is not None:
        cfg = configure(cfg)
    res = train_learn(cfg, split, inputs)
    return Fitted(
        recipe,
        res.model,
        res.best_epoch,
        res.valid,
        res.history,
        res.train_seconds,
        cfg.history_len,
        asdict(cfg),
        lambda: learn_score_fn(res.model, inputs, cfg.history_len),
        lambda on, c: train_cvr_stage(res.model, inputs, on, cfg.history_len, c),
    )
