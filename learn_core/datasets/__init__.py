"""Data readers: MovieLens (read by path, never shipped) and the shipped sample catalogue."""

from __future__ import annotations

from pathlib import Path

from learn_core.datasets.base import (
    INTERACTION_COLUMNS,
    Dataset,
    conversion_labels,
    is_conversion,
)
from learn_core.settings import InputError

SAMPLE_DIR = Path(__file__).parent / "sample"
NAMES = ("ml-100k", "ml-1m-subset", "sample")
#: The files each MovieLens reader needs; any one of a tuple's names will do.
FILES: dict[str, list[tuple[str, ...]]] = {
    "ml-100k": [("u.data",), ("u.item",)],
    "ml-1m-subset": [("movies.dat",), ("ratings.dat", "ratings.PARTIAL_users_1-2999.dat")],
    "sample": [("items.jsonl",), ("interactions.csv",)],
}


class DatasetError(InputError):
    """An unknown data-set name, or a data directory that is missing or lacks its files."""


def check_data_dir(name: str, path: Path) -> None:
    """Refuse a missing directory or one without the reader's files, saying which."""
    if not path.is_dir():
        raise DatasetError(f"data directory {str(path)!r} for {name} does not exist")
    for names in FILES[name]:
        if not any((path / n).is_file() for n in names):
            raise DatasetError(
                f"{str(path)!r} is not a {name} directory: it lacks {' or '.join(names)}"
            )


__all__ = [
    "INTERACTION_COLUMNS",
    "NAMES",
    "SAMPLE_DIR",
    "Dataset",
    "DatasetError",
    "conversion_labels",
    "is_conversion",
    "load_dataset",
]


def load_dataset(name: str, path: str | Path | None = None) -> Dataset:
    """Load a data set by name; MovieLens needs ``path``, the sample defaults to the shipped one."""
    from learn_core.datasets import movielens, synthetic

    key = "ml-1m-subset" if name == "ml-1m" else name
    if key not in NAMES:
        raise DatasetError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    if path is None and key != "sample":
        raise DatasetError(
            f"data set {name!r} is read by path (never shipped): pass --data DIR "
            "with the MovieLens files"
        )
    where = Path(path).expanduser() if path else SAMPLE_DIR
    check_data_dir(key, where)
    if key == "sample":
        return synthetic.read_sample(where)
    if key == "ml-100k":
        return movielens.load_ml100k(where)
    return movielens.load_ml1m_subset(where)
