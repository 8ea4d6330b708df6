"""trainers.recipe: the named recipes build the settings and item inputs they say."""

from __future__ import annotations

import numpy as np
import pytest

from learn_core.models import FrozenContent, HybridItemInputs
from trainers.recipe import (
    ANCHORED,
    CONTENT_CATALOGUE_CVR,
    CONTENT_SLIDING,
    HYBRID_CATALOGUE,
    PRODUCT_RECIPE,
    RECIPES,
    Recipe,
    recipe,
)


def test_product_recipe_is_a_named_recipe_and_unknown_names_fail() -> None:
    assert RECIPES[PRODUCT_RECIPE.name] is PRODUCT_RECIPE
    assert recipe(CONTENT_SLIDING.name) is CONTENT_SLIDING
    with pytest.raises(ValueError, match="content-sliding"):
        recipe("no-such-recipe")
    assert PRODUCT_RECIPE.as_dict()["name"] == PRODUCT_RECIPE.name


def test_train_config_carries_every_field() -> None:
    r = Recipe(
        "t",
        item_variant=3,
        history_len=100,
        negatives="catalogue",
        temperature=0.2,
        logq_correction=False,
        cvr_weight=0.3,
    )
    cfg = r.train_config(input_dim=12, epochs=7, seed=3)
    assert (cfg.pairing, cfg.history_len, cfg.target_len, cfg.epochs, cfg.seed) == (
        "sliding",
        100,
        1,
        7,
        3,
    )
    tower = cfg.model.tower
    assert (tower.content_dim, tower.item_variant) == (12, 3)
    assert tower.max_len >= 101  # the history and its next item fit in the positions
    assert (cfg.task.negatives, cfg.task.temperature, cfg.task.cvr_weight) == (
        "catalogue",
        0.2,
        0.3,
    )
    assert cfg.task.logq_correction is False
    # a 50-item history keeps the towers' 64 positions (and so the seeded initialisation)
    assert CONTENT_SLIDING.train_config(12, 1).model.tower.max_len == 64


def test_item_inputs_are_content_or_content_plus_warm_ids() -> None:
    content = np.eye(4, 6, dtype=np.float32)
    counts = np.array([3, 0, 1, 0])
    plain = CONTENT_SLIDING.item_inputs(content, counts)
    assert isinstance(plain, FrozenContent) and plain.dim == 6
    hybrid = HYBRID_CATALOGUE.item_inputs(content, counts)
    assert isinstance(hybrid, HybridItemInputs)
    assert hybrid.dim == 6 + HYBRID_CATALOGUE.id_dim
    assert hybrid.id_dropout == HYBRID_CATALOGUE.id_dropout
    ids = hybrid.matrix[:, 6:].detach().numpy()
    assert np.all(ids[[1, 3]] == 0) and np.all(np.abs(ids[[0, 2]]).sum(1) > 0)


def test_content_recipe_trains_the_cvr_head_jointly() -> None:
    """The towers' validation winner (the benchmark's ``learn``): content-catalogue plus
    the joint CVR loss."""
    cfg = CONTENT_CATALOGUE_CVR.train_config(input_dim=8, epochs=1)
    assert (cfg.task.negatives, cfg.task.temperature) == ("catalogue", 0.1)
    assert cfg.task.cvr_weight == CONTENT_CATALOGUE_CVR.cvr_weight > 0


def test_product_recipe_is_the_anchored_hybrid_chosen_on_validation() -> None:
    """docs/quality.md's rule chose ``anchored``: every interaction a target, the ID
    correction unbounded, SASRec+CE's patience."""
    assert PRODUCT_RECIPE is ANCHORED and PRODUCT_RECIPE.servable
    cfg = ANCHORED.train_config(epochs=3, seed=4)
    assert cfg.all_chunks and cfg.use_ids and cfg.net.id_max_norm is None
    assert (cfg.epochs, cfg.seed, cfg.patience) == (3, 4, 10)
    assert cfg.net.max_len == ANCHORED.history_len
