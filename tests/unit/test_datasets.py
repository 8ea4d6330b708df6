"""Readers: the shipped sample, the canonical columns, labels and the generator's determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learn_core.datasets import (
    INTERACTION_COLUMNS,
    SAMPLE_DIR,
    is_conversion,
    load_dataset,
    synthetic,
)
from learn_core.datasets.movielens import movie_item
from learn_core.item_text import render_item

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _check_table(df: pd.DataFrame) -> None:
    assert list(df.columns) == INTERACTION_COLUMNS
    assert str(df["occurred_at"].dtype) == "datetime64[ns, UTC]"
    assert df["value"].dtype == float
    assert df["occurred_at"].is_monotonic_increasing


def test_sample_ships_and_loads() -> None:
    ds = load_dataset("sample")
    s = ds.summary()
    assert 400 <= s["items"] <= 600 and 250 <= s["users"] <= 350
    assert 15_000 <= s["interactions"] <= 20_000
    _check_table(ds.interactions)
    assert set(ds.interactions["event_type"]) == {
        "view",
        "click",
        "like",
        "add_to_cart",
        "purchase",
    }
    assert len({it.category for it in ds.items}) == 10
    size = sum(p.stat().st_size for p in SAMPLE_DIR.iterdir())
    assert size < 2_000_000
    # some users of five events or fewer, for the short-history slice
    assert (ds.interactions.groupby("user_id").size() <= 5).sum() > 10


def test_shipped_sample_is_the_generators_output(tmp_path: Path) -> None:
    ds, _ = synthetic.generate()
    synthetic.write_sample(ds, tmp_path)
    for name in ("items.jsonl", "interactions.csv"):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes()


def test_is_conversion() -> None:
    assert is_conversion("purchase", None)
    assert is_conversion("rating", 4.0) and is_conversion("rating", 5.0)
    assert not is_conversion("rating", 3.5)
    assert not is_conversion("rating", float("nan"))
    assert not is_conversion("add_to_cart", None)


def test_movie_item_text() -> None:
    it = movie_item("1", "Misérables, Les (1995)", ["Drama", "Musical"])
    assert it.title == "Misérables, Les" and it.attributes == {"year": "1995"}
    assert it.keywords == ["Drama", "Musical"]
    text = render_item(it)
    assert "Misérables" in text and "1995" in text and "Musical" in text


@pytest.mark.skipif(not (SHARED / "ml-100k" / "u.data").exists(), reason="ml-100k not present")
def test_ml100k_reader() -> None:
    ds = load_dataset("ml-100k", SHARED / "ml-100k")
    assert ds.summary() == {"items": 1682, "users": 943, "interactions": 100_000}
    _check_table(ds.interactions)
    assert (ds.interactions["event_type"] == "rating").all()
    assert ds.interactions["value"].between(1, 5).all()
    assert any("Misérables" in it.title for it in ds.items)  # latin-1 decoded


def test_unknown_or_pathless_dataset_fails() -> None:
    with pytest.raises(ValueError):
        load_dataset("ml-100k")
    with pytest.raises(ValueError):
        load_dataset("netflix", "/tmp")


def test_planted_content_has_topic_structure() -> None:
    topics = np.array([0, 0, 1, 1])
    x = synthetic.planted_content(topics, dim=16, noise=0.3)
    sim = x @ x.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[1, 3]
