"""``bench.tower_inference``: its options are checked, and a short run times both paths,
which give the same vectors, and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.tower_inference import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--users", "ten"], "comma lists of integers"),
        (["--threads", "0"], "must be positive"),
        (["--history", "0"], "--history and --rounds"),
    ],
)
def test_bad_options_fail_naming_the_option(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        main(["--out", str(tmp_path / "x.json"), *argv])


def test_a_short_run_times_both_paths_on_equal_vectors(tmp_path: Path) -> None:
    out = tmp_path / "tower.json"
    argv = ["--out", str(out), "--users", "7", "--threads", "1", "--items", "30"]
    assert main([*argv, "--history", "6", "--rounds", "2"]) == 0
    (case,) = json.loads(out.read_text())["cases"]
    assert case["users"] == 7 and 0 < case["distinct_items"] <= 30
    assert case["rows_p50_ms"] > 0 and case["gathered_p50_ms"] > 0
    assert case["max_abs_diff"] < 1e-5
