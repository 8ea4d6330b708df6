"""Data readers: MovieLens (read by path, never shipped) and the shipped sample catalogue."""

from __future__ import annotations

from pathlib import Path

from learn_core.datasets.base import (
    INTERACTION_COLUMNS,
    Dataset,
    conversion_labels,
    is_conversion,
)

SAMPLE_DIR = Path(__file__).parent / "sample"
NAMES = ("ml-100k", "ml-1m-subset", "sample")

__all__ = [
    "INTERACTION_COLUMNS",
    "NAMES",
    "SAMPLE_DIR",
    "Dataset",
    "conversion_labels",
    "is_conversion",
    "load_dataset",
]


def load_dataset(name: str, path: str | Path | None = None) -> Dataset:
    """Load a data set by name; MovieLens needs ``path``, the sample defaults to the shipped one."""
    from learn_core.datasets import movielens, synthetic

    if name == "sample":
        return synthetic.read_sample(Path(path) if path else SAMPLE_DIR)
    if path is None:
        raise ValueError(f"data set {name!r} is read by path; pass path=")
    if name == "ml-100k":
        return movielens.load_ml100k(path)
    if name in ("ml-1m-subset", "ml-1m"):
        return movielens.load_ml1m_subset(path)
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(NAMES)}")
