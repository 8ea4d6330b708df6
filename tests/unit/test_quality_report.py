"""bench.quality_report.merge: reports of one split combine; anything else is refused."""

from __future__ import annotations

import copy

import pytest

from bench.quality_report import merge


def _report(models: dict[str, float]) -> dict:
    return {
        "dataset": "ml-100k",
        "seed": 0,
        "data": {"users": 3},
        "protocol": "p",
        "total_seconds": 10.0,
        "complete": True,
        "models": {n: {"hr@10": hr, "train_seconds": 1.0} for n, hr in models.items()},
        "slices": {
            "cold": {n: {"hr@10": hr / 2} for n, hr in models.items()},
            "warm": {n: {"hr@10": hr} for n, hr in models.items()},
        },
        "settings": {n: {"seed": 0} for n in models},
    }


def test_merge_combines_models_and_recomputes_targets() -> None:
    a = _report({"learn": 0.22, "popularity": 0.05})
    b = _report({"sasrec_ce": 0.20, "sasrec": 0.15})
    m = merge([a, b])
    assert set(m["models"]) == {"learn", "popularity", "sasrec_ce", "sasrec"}
    assert set(m["slices"]["warm"]) == set(m["models"])
    assert m["targets"]["best_sasrec"] == "sasrec_ce"
    assert m["targets"]["learn_over_best_sasrec_hr@10"] == pytest.approx(1.1)
    assert m["total_seconds"] == 20.0 and m["complete"] and m["merged_from"] == 2


def test_merge_refuses_other_splits_and_duplicate_models() -> None:
    a = _report({"learn": 0.22})
    other_seed = copy.deepcopy(a) | {"seed": 1}
    other_seed["models"] = {"sasrec": {"hr@10": 0.1, "train_seconds": 1.0}}
    with pytest.raises(ValueError, match="seed"):
        merge([a, other_seed])
    with pytest.raises(ValueError, match="learn"):
        merge([a, _report({"learn": 0.2})])
