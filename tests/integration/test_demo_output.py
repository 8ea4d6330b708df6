"""``learnrec demo`` as a new user sees it: no nan, no traceback, no exit noise.

A short run (3,000 interactions, one epoch) through the real CLI in a subprocess, so
that what reaches the terminal (logging, warnings, interpreter-exit output) is checked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from learnrec.demo import DemoResult, summary_lines
from tests.integration.cache_links import linked_cache_dir

ROOT = Path(__file__).resolve().parents[2]

NOISE = [
    r"\bnan\b",
    r"Traceback",
    r"nanobind",
    r"subscription unchanged",
    r"blocking the event loop",  # kafka-python's I/O thread on a busy machine
    r"left running at interpreter exit",
    r"\(no current model\)",  # the summary; the retrain log line may say it
]


def _result(**kw: object) -> DemoResult:
    base = dict(
        dataset="sample",
        items=1,
        interactions=1,
        replay_events_per_s=1.0,
        consume_seconds=1.0,
        consume_events_per_s=1.0,
        freshness_p50_ms=None,
        freshness_p99_ms=None,
        freshness_samples=0,
        retrain={
            "candidate": {"hr@10": 0.3},
            "popularity": {"hr@10": 0.1},
            "eval_users": 3,
            "cutoff": "2024-01-01T00:00:00",
            "reason": "no current model",
        },
        model_version="m1",
        rank_p50_ms=1.0,
        rank_p99_ms=2.0,
        example={},
        seconds={"total": 1.0},
    )
    return DemoResult(**(base | kw))  # type: ignore[arg-type]


def test_summary_says_n_a_without_freshness_samples() -> None:
    text = "\n".join(summary_lines(_result()))
    assert "n/a" in text and not re.search(r"\bnan\b", text, re.I)
    assert "first model" in text and "no current model" not in text
    text = "\n".join(summary_lines(_result(freshness_p50_ms=12.0, freshness_p99_ms=40.0)))
    assert "p50 12 ms, p99 40 ms" in text


@pytest.mark.integration
@pytest.mark.slow
def test_demo_output_is_clean(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEARNREC_", "KAFKA_"))}
    env.update(PYTHONPATH=str(ROOT), LEARNREC_CACHE_DIR=str(linked_cache_dir(tmp_path)))
    out = subprocess.run(
        [sys.executable, "-m", "learnrec", "demo", "--limit", "3000", "--epochs", "1"]
        + ["--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=480,
        cwd=tmp_path,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-6000:]
    for pattern in NOISE:
        found = re.search(pattern, text, re.I)
        assert not found, f"{pattern!r} in the demo's output:\n{text[-6000:]}"
    assert re.search(r"freshness .*p50 \d+ ms", text), text[-3000:]
    # The demo trains with the product's named recipe (trainers.recipe.PRODUCT_RECIPE).
    from trainers.recipe import PRODUCT_RECIPE

    assert f"trained (recipe {PRODUCT_RECIPE.name})" in text, text[-3000:]
