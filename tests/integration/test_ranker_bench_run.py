"""bench.ranker end to end on a tiny generated data set, through Feast's embedded profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_ranker_bench_runs_end_to_end_and_reports_every_set_and_slice(tmp_path: Path) -> None:
    pytest.importorskip("lightgbm")
    from bench.ranker import parser, run
    from bench.ranker_model import SETS, SLICES
    from learn_core.datasets.synthetic import generate

    ds, _ = generate(n_items=60, n_users=40, mean_events=20.0, seed=3, name="tiny")
    out = tmp_path / "r.json"
    args = parser().parse_args(
        [
            "--dataset",
            "tiny",
            "--out",
            str(out),
            "--seeds",
            "0",
            "--profiles",
            "embedded",
            "--quick",
        ]
    )
    report = run(args, ds)
    written = json.loads(out.read_text())
    assert written["gauc"]["C"]["all"] == report["gauc"]["C"]["all"]
    assert set(report["rows"]) == {"towers", "train", "valid", "test"}
    for metric in ("auc", "gauc"):
        assert set(report[metric]) == set(SETS)
        for name in SETS:
            assert set(report[metric][name]) == set(SLICES)
            assert 0.0 <= report[metric][name]["all"] <= 1.0
    build = report["per_seed"]["0"]["build"]
    assert build["embedded"]["equal_to_pandas"] is True
