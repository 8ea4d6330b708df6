"""Typed training entry points: ``train(cfg) -> TrainResult`` and the one way to save a model.

``learnrec train`` parses its flags into a ``TrainConfig`` and calls ``train``; the
retraining job trains on the feature store's history and saves through the same
``save_version``, so every manifest carries the serving contract
(``learn_core.contract.ServingConfig``: history length, pairing, content identity) and
the recipe it was trained with (``recipe``: name, settings, overrides).

Both default to one named recipe, ``trainers.recipe.PRODUCT_RECIPE`` (the benchmark's
validation winner): ``ProductRecipeSettings`` reads ``<PREFIX>RECIPE`` and lets
``<PREFIX>PAIRING`` / ``<PREFIX>ITEM_VARIANT`` override single values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from learn_core.contract import ServingConfig
from trainers.distributed import SINGLE, DistContext
from trainers.recipe import PRODUCT_RECIPE, RECIPES, AnyRecipe, RecipeSettings

if TYPE_CHECKING:
    from learn_core.embedding.base import ContentEmbedder
    from learn_core.registry import ModelRegistry

log = logging.getLogger(__name__)


class ProductRecipeSettings(RecipeSettings):
    """A named recipe with single-value overrides (a base class: subclasses set the prefix)."""

    recipe: str = Field(
        PRODUCT_RECIPE.name,
        description="named LEARN recipe (trainers/recipe.py); default: the product's, the "
        "benchmark's validation winner (docs/quality.md)",
    )
    pairing: Literal["window", "sliding"] | None = Field(  # type: ignore[assignment]
        None,
        description="overrides the recipe's pairing (unset: the recipe's). window: K history "
        "positions x the T items after the history; sliding: every history position x the "
        "T items that follow it",
    )
    item_variant: int | None = Field(  # type: ignore[assignment]
        None,
        ge=1,
        le=3,
        description="overrides the recipe's item tower (unset: the recipe's): 1 shared+causal, "
        "2 shared, one item; 3 projection",
    )

    @model_validator(mode="after")
    def _recipe_is_trainable(self) -> ProductRecipeSettings:
        prefix = self.model_config.get("env_prefix", "")
        if self.recipe not in RECIPES:
            raise ValueError(
                f"{prefix}RECIPE: unknown recipe {self.recipe!r}; known: {', '.join(RECIPES)}"
            )
        if RECIPES[self.recipe].arch != "towers":
            over = [k for k in ("pairing", "item_variant") if getattr(self, k) is not None]
            if over:
                names = ", ".join(f"{prefix}{k.upper()}" for k in over)
                raise ValueError(
                    f"{names}: recipe {self.recipe!r} is the content-anchored hybrid, which "
                    "has no LEARN-tower pairing or item tower to override; unset it"
                )
            return self
        r = self.effective_recipe()
        if not r.servable:
            raise ValueError(
                f"{prefix}RECIPE: {r.name!r} trains learned item IDs concatenated to the "
                "towers' input, which the serving path does not load; choose another recipe"
            )
        if r.negatives == "catalogue" and r.pairing != "sliding":
            raise ValueError(
                f"{prefix}PAIRING must be sliding with recipe {r.name!r} (its softmax over "
                "the catalogue scores every history position)"
            )
        if r.pairing == "sliding" and r.item_variant == 1:
            raise ValueError(
                f"{prefix}ITEM_VARIANT must be 2 or 3 when {prefix}PAIRING=sliding (recipe "
                f"{r.name!r}; variant 1 reads a separate target sequence)"
            )
        return self

    def effective_recipe(self) -> AnyRecipe:
        """The named recipe with the overrides that are set (LEARN-tower recipes only)."""
        named = RECIPES[self.recipe]
        if named.arch != "towers":
            return named
        over = {k: getattr(self, k) for k in ("pairing", "item_variant")}
        return replace(named, **{k: v for k, v in over.items() if v is not None})


def recipe_record(recipe: AnyRecipe) -> dict[str, Any]:
    """What a manifest records: the recipe's name and settings, and which differ from the name's."""
    named = RECIPES.get(recipe.name)
    values = recipe.as_dict()
    base = named.as_dict() if named is not None else {}
    overrides = {k: v for k, v in values.items() if named is None or base.get(k) != v}
    return values | {"overrides": overrides}


def save_version(
    registry: ModelRegistry,
    model: Any,
    serving: ServingConfig,
    *,
    data_window: dict[str, Any],
    metrics: dict[str, Any],
    parent_version: str | None,
    recipe: AnyRecipe,
    **extra: Any,
) -> str:
    """Store a trained ``LearnModel`` with its serving contract and recipe (unpromoted)."""
    return str(
        registry.save(
            model,
            content_model=serving.content_model,
            serving=serving,
            data_window=data_window,
            metrics=metrics,
            parent_version=parent_version,
            history_len=serving.history_len,
            recipe=recipe_record(recipe),
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
    recipe: AnyRecipe = PRODUCT_RECIPE
    registry: Path | None = None
    promote: bool = False


@dataclass
class TrainResult:
    version: str
    promoted: bool
    serving: ServingConfig
    test: dict[str, Any]
    cvr: dict[str, float | str | None] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)


def serving_contract(
    model: Any, history_len: int, pairing: str, content_model: str
) -> ServingConfig:
    """The serving contract of a trained model: its window, pairing, content identity and,
    for a model with ID rows (the content-anchored hybrid), its ID table's size and version."""
    vocab = getattr(getattr(model, "item_tower", None), "vocab", None)
    rows = len(vocab) if vocab is not None else 0
    return ServingConfig(
        history_len,
        pairing,  # type: ignore[arg-type]
        content_model,
        id_table_rows=rows,
        id_table_sha256=vocab.digest() if rows else None,
    )


def train(
    cfg: TrainConfig, embedder: ContentEmbedder | None = None, dist: DistContext = SINGLE
) -> TrainResult | None:
    """Train the recipe (towers or hybrid, then the CVR head) on a data set, evaluate, register it.

    Under ``torchrun`` (``dist``) every rank trains on its share of each batch; rank 0
    alone runs the CVR stage, evaluates and saves, and the other ranks return ``None``.
    """
    import torch

    from learn_core.datasets import load_dataset
    from learn_core.embedding.identity import content_identity
    from learn_core.registry import ModelRegistry
    from trainers.content_cache import content_matrix
    from trainers.evaluation import eval_loop, summarise
    from trainers.learn import CVRStageConfig
    from trainers.product import fit
    from trainers.splits import leave_one_out

    if not cfg.recipe.servable:
        raise ValueError(f"recipe {cfg.recipe.name!r}: the serving path cannot load what it trains")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = load_dataset(cfg.dataset, cfg.data)
    split = leave_one_out(ds, cold_fraction=0.1, seed=cfg.seed)
    if embedder is None:
        from learn_core.embedding.hf import HFEmbedder

        embedder = HFEmbedder()
    if dist.main:  # rank 0 fills the content cache; the others then read it
        content = content_matrix(ds.items, embedder)
    dist.barrier()
    if not dist.main:
        content = content_matrix(ds.items, embedder)
    fitted = fit(cfg.recipe, split, content, epochs=cfg.epochs, seed=cfg.seed, dist=dist)
    if not dist.main:
        return None
    serving = serving_contract(
        fitted.model, fitted.history_len, cfg.recipe.pairing, content_identity(embedder)
    )
    cvr: dict[str, float | str | None] = {}
    if cfg.cvr_epochs:
        cvr = fitted.cvr_stage(split, CVRStageConfig(epochs=cfg.cvr_epochs, seed=cfg.seed))
    test = summarise(eval_loop(fitted.score_fn(), split), split)
    times = ds.interactions["occurred_at"]
    reg = ModelRegistry(cfg.registry)
    version = save_version(
        reg,
        fitted.model,
        serving,
        data_window={"dataset": ds.name, "start": str(times.min()), "end": str(times.max())},
        metrics={"valid": fitted.valid, "test": test["all"], "cold": test["cold"], "cvr": cvr},
        parent_version=reg.current_version(),
        recipe=cfg.recipe,
        train_processes=dist.world,
    )
    if cfg.promote:
        reg.promote(version)
    return TrainResult(version, cfg.promote, serving, test, cvr, recipe_record(cfg.recipe))
