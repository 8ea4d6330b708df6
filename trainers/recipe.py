"""LEARN's named training recipes, and the recipe settings of ``learnrec train`` and retraining.

``PRODUCT_RECIPE`` is the one recipe the product trains with: the winner on *validation*
among the candidate recipes by the rule of docs/quality.md (``bench.quality``'s
``product`` model is this recipe). A ``Recipe`` (LEARN's towers) names
everything about how LEARN learns except the data-dependent budget (epochs, time):
pairing, item tower, history length, softmax, temperature, item inputs, CVR weight.

``RecipeSettings`` is a base class rather than a component: each subclass sets its own
env prefix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # torch stays out of the CLI's start-up path
    import numpy as np

    from trainers.anchored import AnchoredTrainConfig
    from trainers.learn import LearnTrainConfig

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings


class RecipeSettings(BaseSettings):
    """How LEARN pairs users with targets, and which item tower it trains."""

    pairing: Literal["window", "sliding"] = Field(
        "window",
        description="window: K history positions x the T items after the history; "
        "sliding: every history position x the T items that follow it (best on MovieLens "
        "validation, see docs/quality.md)",
    )
    item_variant: int = Field(
        1, ge=1, le=3, description="item tower: 1 shared+causal, 2 shared, one item; 3 projection"
    )

    @model_validator(mode="after")
    def _sliding_needs_single_items(self) -> RecipeSettings:
        if self.pairing == "sliding" and self.item_variant == 1:
            prefix = self.model_config.get("env_prefix", "")
            raise ValueError(
                f"{prefix}ITEM_VARIANT must be 2 or 3 when {prefix}PAIRING=sliding "
                "(variant 1 reads a separate target sequence)"
            )
        return self


@dataclass(frozen=True)
class Recipe:
    """How LEARN trains; ``id_dim > 0`` adds a learned ID to warm items' content (hybrid)."""

    name: str
    pairing: Literal["window", "sliding"] = "sliding"
    item_variant: int = 2
    history_len: int = 50
    target_len: int = 1
    negatives: Literal["in_batch", "catalogue"] = "in_batch"
    temperature: float = 0.07
    logq_correction: bool = True
    id_dim: int = 0  # 0: the paper's pure-content towers
    id_dropout: float = 0.5  # hybrid only: P(ID part zeroed) per looked-up item in training
    cvr_weight: float = 0.0  # > 0: the CVR head trained jointly (auxiliary BCE)

    #: Which model the recipe trains: LEARN's towers (``trainers.learn``).
    arch = "towers"

    @property
    def hybrid(self) -> bool:
        return self.id_dim > 0

    @property
    def servable(self) -> bool:
        """Whether the serving path loads what it trains (the towers' concatenated IDs: no)."""
        return not self.hybrid

    def as_dict(self) -> dict[str, Any]:
        """The recipe as plain JSON, for manifests and benchmark reports."""
        return asdict(self) | {"arch": self.arch}

    def train_config(self, input_dim: int, epochs: int, seed: int = 0) -> LearnTrainConfig:
        """``LearnTrainConfig`` for towers over ``input_dim``-d item inputs (``item_inputs().dim``)."""
        from learn_core.models import LearnConfig, TowerConfig
        from trainers.learn import LearnTrainConfig
        from trainers.learn_task import LearnTaskConfig

        # positions beyond 64 only when the history needs them (64 keeps the seeded init)
        max_len = max(64, self.history_len + self.target_len)
        tower = TowerConfig(content_dim=input_dim, item_variant=self.item_variant, max_len=max_len)
        task = LearnTaskConfig(
            temperature=self.temperature,
            cvr_weight=self.cvr_weight,
            logq_correction=self.logq_correction,
            negatives=self.negatives,
        )
        return LearnTrainConfig(
            model=LearnConfig(tower=tower),
            task=task,
            history_len=self.history_len,
            target_len=self.target_len,
            pairing=self.pairing,
            epochs=epochs,
            seed=seed,
        )

    def item_inputs(self, content: np.ndarray, train_counts: np.ndarray) -> Any:
        """The towers' item inputs: frozen content, or content + ID for items with training counts."""
        import torch

        from learn_core.models import FrozenContent, HybridItemInputs

        matrix = torch.from_numpy(content)
        if not self.hybrid:
            return FrozenContent(matrix)
        warm = torch.from_numpy(train_counts > 0)
        return HybridItemInputs(matrix, warm, self.id_dim, self.id_dropout)


@dataclass(frozen=True)
class AnchoredRecipe:
    """The content-anchored hybrid (``trainers.anchored``): SASRec+CE's backbone over
    whitened content plus a bounded ID correction for items seen in training.

    ``history_len`` is the user tower's window (its positions); ``use_ids=False`` is the
    content-only ablation.
    """

    name: str
    history_len: int = 50
    d: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    anchor: Literal["linear", "frozen", "none"] = "linear"
    whiten_dim: int = 256
    whiten: bool = True
    item_bias: bool = False
    use_ids: bool = True
    all_chunks: bool = False  # every training interaction a target (windows of history_len)
    id_max_norm: float | None = 1.0
    id_dropout: float = 0.0
    cvr_weight: float = 0.0  # > 0: the CVR head trained jointly (auxiliary BCE)
    #: evaluations (every 2 epochs) without validation NDCG@10 gain before stopping
    patience: int = 10

    arch = "anchored"
    hybrid = False  # not the towers' concatenated-ID hybrid
    servable = True
    pairing: Literal["window", "sliding"] = "sliding"  # every position predicts the next item

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"arch": self.arch}

    def train_config(self, epochs: int = 200, seed: int = 0) -> AnchoredTrainConfig:
        from learn_core.models.anchored import AnchoredConfig
        from trainers.anchored import AnchoredTrainConfig

        net = AnchoredConfig(
            d=self.d,
            n_blocks=self.n_blocks,
            n_heads=self.n_heads,
            max_len=self.history_len,
            dropout=self.dropout,
            id_max_norm=self.id_max_norm,
            whiten_dim=self.whiten_dim,
            whiten=self.whiten,
            anchor=self.anchor,
            item_bias=self.item_bias,
        )
        return AnchoredTrainConfig(
            net=net,
            id_dropout=self.id_dropout,
            use_ids=self.use_ids,
            all_chunks=self.all_chunks,
            cvr_weight=self.cvr_weight,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            epochs=epochs,
            patience=self.patience,
            seed=seed,
        )


AnyRecipe = Recipe | AnchoredRecipe


#: The paper's pure-content towers with the sliding pairing and item tower variant 2:
#: every history position against the next item, in-batch softmax with logQ, temperature
#: 0.07 (the benchmark's ``learn`` until 2026-11-29; ml-100k valid NDCG@10 0.1224).
CONTENT_SLIDING = Recipe("content-sliding")
#: The same towers with the softmax over the whole catalogue (every trained item, one
#: cheap pass per step with item tower variant 2, nothing sampled, no logQ) at
#: temperature 0.1 (ml-100k valid NDCG@10 0.1232; 0.1133 at 0.07).
CONTENT_CATALOGUE = Recipe("content-catalogue", negatives="catalogue", temperature=0.1)
#: ``content-catalogue`` with the CVR head trained jointly (auxiliary BCE on each
#: position's next item, weight 0.5): ml-100k valid NDCG@10 0.1261, HR@10 0.2333 (0.1229
#: at weight 0.2; docs/quality.md, "Third pass"). Test not yet read.
CONTENT_CATALOGUE_CVR = Recipe(
    "content-catalogue-cvr", negatives="catalogue", temperature=0.1, cvr_weight=0.5
)
#: Content + a 64-d learned ID for warm items (dropped with p=0.5 in training; cold
#: items fall back to content), in-batch softmax with logQ (valid NDCG@10 0.1176).
HYBRID_IN_BATCH = Recipe("hybrid-in-batch", id_dim=64)
#: As above with the catalogue softmax at 0.07 (2026-11-29's first ``learn_hybrid``;
#: valid NDCG@10 0.1125).
HYBRID_CATALOGUE = Recipe("hybrid-catalogue", negatives="catalogue", id_dim=64)

#: The content-anchored hybrid, every training interaction a target (windows of the
#: serving history length), the ID correction unbounded: the selection split's
#: candidate that learns most on MovieLens (docs/quality.md).
ANCHORED = AnchoredRecipe("anchored", all_chunks=True, id_max_norm=None)
#: The hybrid with the correction's norm bounded at 1 and a quarter of the IDs dropped
#: per step (the item then scored from its content): amazon-pantry's best candidate.
ANCHORED_BOUNDED = AnchoredRecipe("anchored-bounded", id_max_norm=1.0, id_dropout=0.25)

RECIPES: dict[str, AnyRecipe] = {
    r.name: r
    for r in (
        CONTENT_SLIDING,
        CONTENT_CATALOGUE,
        CONTENT_CATALOGUE_CVR,
        HYBRID_IN_BATCH,
        HYBRID_CATALOGUE,
        ANCHORED,
        ANCHORED_BOUNDED,
    )
}

#: The product's recipe: the content-anchored hybrid ``anchored``, chosen by the rule of
#: docs/quality.md (selection-split validation NDCG@10, normalised per data set): 0.98
#: mean against ``anchored-bounded``'s 0.90 over amazon-pantry (0.0742 vs 0.0767) and
#: ml-100k (0.1085 vs 0.0873). Until 2026-12-07: ``content-catalogue-cvr``.
PRODUCT_RECIPE: AnyRecipe = ANCHORED


def recipe(name: str) -> AnyRecipe:
    """A named recipe; an unknown name fails listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None
