"""``learnrec train``, the retraining job and the demo default to one named recipe.

The recipe is ``trainers.recipe.PRODUCT_RECIPE`` (the benchmark's validation winner);
``<PREFIX>PAIRING`` / ``<PREFIX>ITEM_VARIANT`` override single values, bad values fail
naming the variable, and a manifest records the recipe with its overrides.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from learn_core.settings import ConfigError, load
from trainers.cli import TrainSettings
from trainers.jobs.retrain import RetrainSettings
from trainers.recipe import CONTENT_CATALOGUE_CVR, PRODUCT_RECIPE, RECIPES
from trainers.train import TrainConfig, recipe_record, train

#: A LEARN-tower recipe, whose pairing and item tower the settings may override.
TOWERS = CONTENT_CATALOGUE_CVR


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for prefix in ("LEARNREC_TRAIN_", "LEARNREC_RETRAIN_"):
        for var in ("RECIPE", "PAIRING", "ITEM_VARIANT", "TARGET_LEN"):
            monkeypatch.delenv(prefix + var, raising=False)


@pytest.mark.parametrize("cls", [TrainSettings, RetrainSettings])
def test_default_is_the_product_recipe(cls: type) -> None:
    s = load(cls)
    assert s.recipe == PRODUCT_RECIPE.name and s.effective_recipe() == PRODUCT_RECIPE
    assert recipe_record(s.effective_recipe())["overrides"] == {}
    assert TrainConfig().recipe == PRODUCT_RECIPE


def test_env_overrides_single_values_and_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Single-value overrides of a LEARN-tower recipe (the anchored hybrid has none)."""
    monkeypatch.setenv("LEARNREC_TRAIN_RECIPE", TOWERS.name)
    other = 3 if TOWERS.item_variant != 3 else 2
    monkeypatch.setenv("LEARNREC_TRAIN_ITEM_VARIANT", str(other))
    r = load(TrainSettings).effective_recipe()
    assert r.item_variant == other and r.pairing == TOWERS.pairing
    rec = recipe_record(r)
    assert rec["name"] == TOWERS.name and rec["item_variant"] == other
    assert rec["overrides"] == {"item_variant": other}
    # The old library default, window pairing + variant 1, unless the recipe's softmax
    # needs the sliding pairing: then the start-up names the variable.
    monkeypatch.setenv("LEARNREC_TRAIN_PAIRING", "window")
    monkeypatch.setenv("LEARNREC_TRAIN_ITEM_VARIANT", "1")
    if TOWERS.negatives == "catalogue":
        with pytest.raises(ConfigError, match="LEARNREC_TRAIN_PAIRING must be sliding"):
            load(TrainSettings)
    else:
        assert load(TrainSettings).effective_recipe().pairing == "window"
    monkeypatch.setenv("LEARNREC_TRAIN_RECIPE", "content-sliding")
    r = load(TrainSettings).effective_recipe()  # in-batch softmax: window is allowed
    assert (r.name, r.pairing, r.item_variant) == ("content-sliding", "window", 1)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LEARNREC_RETRAIN_RECIPE": "no-such-recipe"}, "LEARNREC_RETRAIN_RECIPE"),
        ({"LEARNREC_RETRAIN_ITEM_VARIANT": "7"}, "LEARNREC_RETRAIN_ITEM_VARIANT"),
        ({"LEARNREC_RETRAIN_PAIRING": "windows"}, "LEARNREC_RETRAIN_PAIRING"),
        (
            {"LEARNREC_RETRAIN_PAIRING": "sliding", "LEARNREC_RETRAIN_ITEM_VARIANT": "1"},
            "LEARNREC_RETRAIN_ITEM_VARIANT.*LEARNREC_RETRAIN_PAIRING",
        ),
    ],
)
def test_bad_values_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=named):
        load(RetrainSettings)


def test_tower_hybrid_recipes_are_refused_as_the_serving_path_cannot_load_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The towers' concatenated-ID hybrids; the content-anchored hybrid is servable."""
    hybrid = [name for name, r in RECIPES.items() if not r.servable]
    if not hybrid:
        pytest.skip("no unservable recipe is named")
    monkeypatch.setenv("LEARNREC_TRAIN_RECIPE", hybrid[0])
    with pytest.raises(ConfigError, match="LEARNREC_TRAIN_RECIPE.*does not load"):
        load(TrainSettings)


class _Planted:
    """Deterministic content vectors (no model load): a hash of the text seeds each one."""

    model_id = "planted"
    dim = 16

    def embed(self, texts: list[str]) -> np.ndarray:
        import zlib

        out = np.stack(
            [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(16) for t in texts]
        ).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_train_uses_the_recipe_and_the_manifest_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import learn_core.datasets as datasets

    monkeypatch.setenv("LEARNREC_CACHE_DIR", str(tmp_path / "cache"))
    full = datasets.load_dataset

    def small(name: str, data: Path | None = None) -> datasets.Dataset:
        """The sample's first 60 users: seconds of training, the same code path."""
        ds = full(name, data)
        users = sorted(ds.interactions["user_id"].unique())[:60]
        keep = ds.interactions[ds.interactions["user_id"].isin(users)]
        return datasets.Dataset(ds.name, ds.items, keep.reset_index(drop=True))

    monkeypatch.setattr(datasets, "load_dataset", small)
    # one value overridden, so that the record's "overrides" is not trivially empty
    other = 3 if TOWERS.item_variant != 3 else 2
    recipe = replace(TOWERS, item_variant=other)
    res = train(
        TrainConfig(epochs=1, cvr_epochs=0, recipe=recipe, registry=tmp_path / "reg"),
        embedder=_Planted(),
    )
    assert res.serving.pairing == TOWERS.pairing
    manifest = json.loads(next((tmp_path / "reg").rglob("manifest.json")).read_text())
    saved = manifest["extra"]["recipe"]
    assert saved == recipe_record(recipe) == res.recipe
    assert saved["name"] == TOWERS.name and saved["overrides"] == {"item_variant": other}
    assert manifest["serving"]["pairing"] == TOWERS.pairing
    assert manifest["config"]["tower"]["item_variant"] == other  # the towers it trained
