"""The cold-start diagnostic's pure parts: slice HR and the recipe overrides."""

import math

import numpy as np
import pytest

from bench.cold_start import apply_overrides, parse_overrides, slice_hr
from learn_core.models import LearnConfig, TowerConfig
from trainers.learn import LearnTrainConfig


def test_slice_hr_by_hand() -> None:
    # ranks of 5 users (0-based); user 4 has no target
    ranks = np.array([0.0, 12.0, 3.0, 9.0, np.nan])
    cold = np.array([True, True, False, False, True])
    out = slice_hr(ranks, cold)
    assert out["all"] == pytest.approx(3 / 4)
    assert out["cold"] == pytest.approx(1 / 2)  # user 0 hit, user 1 missed, user 4 absent
    assert out["warm"] == pytest.approx(1.0)
    assert (out["cold_hits"], out["n_cold"]) == (1, 2)
    assert out["cold_over_warm"] == pytest.approx(0.5)


def test_slice_hr_without_warm_hits_is_nan_ratio() -> None:
    out = slice_hr(np.array([50.0, 1.0]), np.array([False, True]))
    assert out["warm"] == 0.0 and math.isnan(out["cold_over_warm"])


def test_overrides_reach_nested_configs() -> None:
    cfg = LearnTrainConfig(model=LearnConfig(tower=TowerConfig()))
    over = parse_overrides(["weight_decay=0.1", "tower.dropout=0.2", "task.temperature=0.1"])
    apply_overrides(cfg, over)
    assert cfg.weight_decay == 0.1
    assert cfg.model.tower.dropout == 0.2
    assert cfg.task.temperature == 0.1
    apply_overrides(cfg, parse_overrides(["pairing=sliding"]))  # not JSON: kept as text
    assert cfg.pairing == "sliding"


@pytest.mark.parametrize("bad", ["weight_decay", "=3"])
def test_malformed_override_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides([bad])


def test_unknown_override_names_the_setting() -> None:
    cfg = LearnTrainConfig()
    with pytest.raises(ValueError, match="tower.widht"):
        apply_overrides(cfg, {"tower.widht": 3})
