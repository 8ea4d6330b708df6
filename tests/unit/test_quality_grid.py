"""bench.quality_grid: overrides reach the SASRec+CE settings; unknown names are refused."""

from __future__ import annotations

import pytest

from bench.quality import sasrec_ce_bench_config
from bench.quality_grid import apply_sasrec_overrides


def test_sasrec_overrides_set_fields_and_refuse_unknown_names() -> None:
    cfg = sasrec_ce_bench_config(seed=0)
    apply_sasrec_overrides(cfg, {"lr": 5e-4, "max_len": 50})
    assert (cfg.lr, cfg.max_len, cfg.loss) == (5e-4, 50, "ce")
    with pytest.raises(ValueError, match="no_such"):
        apply_sasrec_overrides(cfg, {"no_such": 1})


def test_recipe_overrides_build_one_consistent_recipe() -> None:
    from bench.quality import BENCH_RECIPES
    from bench.quality_grid import apply_recipe_overrides

    base = BENCH_RECIPES["learn"]
    r = apply_recipe_overrides(base, {"recipe.history_len": 200, "recipe.temperature": 0.2})
    assert (r.history_len, r.temperature, r.name) == (200, 0.2, base.name)
    assert base.history_len != 200  # the named recipe itself is untouched
    cfg = r.train_config(input_dim=8, epochs=1)
    # the positions follow the history, which a plain history_len override would not do
    assert cfg.history_len == 200 and cfg.model.tower.max_len >= 200 + r.target_len
    assert apply_recipe_overrides(base, {}) is base
    for bad in ("recipe.no_such", "recipe.name"):
        with pytest.raises(ValueError, match=bad):
            apply_recipe_overrides(base, {bad: 1})


def test_product_grid_point_on_the_selection_split_reports_cold_and_warm(tmp_path) -> None:
    """The product's recipe fields are overridable, and the selection split's validation
    has cold targets (a further 10% of items held out of training), reported apart."""
    import json

    from bench.quality_grid import main

    out = tmp_path / "grid.jsonl"
    rc = main(
        [
            "--dataset", "sample", "--model", "product", "--split", "selection",
            "--set", "recipe.history_len=20", "--quick", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["recipe"]["history_len"] == 20 and rep["split"].startswith("cold-holdout")
    assert rep["valid_cold"]["n"] > 0 and rep["valid_warm"]["n"] > 0
    assert rep["valid_cold"]["n"] + rep["valid_warm"]["n"] == rep["valid"]["n"]
    with pytest.raises(ValueError, match="recipe.x keys only"):
        main(["--dataset", "sample", "--model", "product", "--set", "lr=1", "--out", str(out)])
