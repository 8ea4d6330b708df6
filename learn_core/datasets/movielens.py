"""Readers for MovieLens-100K and the MovieLens-1M ratings subset.

The files are read by path and never copied into the project (the licence forbids
redistribution). Item text is title, year and genres: the genres become the category
and keywords, the release year an attribute. Every rating is a ``rating`` event with
the stars in ``value``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from learn_core.datasets.base import Dataset, normalise_interactions
from learn_core.events import ItemCreated

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip

_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def movie_item(movie_id: str, raw_title: str, genres: list[str]) -> ItemCreated:
    """One movie as an item: the year moves from the title into an attribute."""
    raw_title = raw_title.strip() or f"movie {movie_id}"
    m = _YEAR.search(raw_title)
    title = raw_title[: m.start()].strip() if m else raw_title
    attributes = {"year": m.group(1)} if m else {}
    genres = [g for g in genres if g and g != "unknown"]
    return ItemCreated(
        item_id=movie_id,
        title=title or raw_title,
        category=", ".join(genres) if genres else None,
        keywords=genres,
        attributes=attributes,
    )


def _ratings(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    df = df.assign(
        event_id=prefix + df["user_id"].astype(str) + "-" + df["item_id"].astype(str),
        event_type="rating",
        value=df["rating"].astype(float),
        occurred_at=pd.to_datetime(df["ts"], unit="s", utc=True),
    )
    return normalise_interactions(df)


def load_ml100k(path: str | Path) -> Dataset:
    """MovieLens-100K from ``u.data`` (tab-separated) and ``u.item`` (latin-1, ``|``)."""
    path = Path(path)
    items = []
    with open(path / "u.item", encoding="latin-1") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 24:
                continue
            flags = parts[5:24]
            genres = [g for g, flag in zip(ML100K_GENRES, flags, strict=True) if flag == "1"]
            items.append(movie_item(parts[0], parts[1], genres))
    ratings = pd.read_csv(
        path / "u.data", sep="\t", header=None, names=["user_id", "item_id", "rating", "ts"]
    )
    return Dataset("ml-100k", items, _ratings(ratings, "ml100k-"))


def _read_movies(path: Path) -> list[ItemCreated]:
    items = []
    with open(path / "movies.dat", encoding="latin-1") as f:
        for line in f:
            parts = line.rstrip("\n").split("::")
            if len(parts) != 3:
                continue
            items.append(movie_item(parts[0], parts[1], parts[2].split("|")))
    return items


def _read_ratings(rating_file: Path) -> pd.DataFrame:
    return pd.read_csv(
        rating_file,
        sep="::",
        engine="python",
        header=None,
        names=["user_id", "item_id", "rating", "ts"],
    )


def is_ml1m_layout(path: str | Path) -> bool:
    """True for a directory with MovieLens-1M's ``ratings.dat`` and ``movies.dat``."""
    path = Path(path)
    return (path / "ratings.dat").is_file() and (path / "movies.dat").is_file()


def load_ml1m_layout(path: str | Path, name: str | None = None) -> Dataset:
    """Any data set converted to MovieLens-1M's layout: ``ratings.dat`` and ``movies.dat``.

    ``ratings.dat``: ``user::item::rating::unix seconds``; ``movies.dat``:
    ``item::Title (year)::Genre|Genre`` (latin-1). Named after the directory by default.
    """
    path = Path(path)
    if not is_ml1m_layout(path):
        raise FileNotFoundError(f"{path} has no ratings.dat and movies.dat (MovieLens-1M layout)")
    items = _read_movies(path)
    return Dataset(
        name or path.resolve().name, items, _ratings(_read_ratings(path / "ratings.dat"), "ml1m-")
    )


def load_ml1m_subset(path: str | Path) -> Dataset:
    """MovieLens-1M movies with whatever ratings file is present (the partial one here).

    ``ratings.dat`` is preferred when present; otherwise the partial file of the first
    2,999 users is used, and the data set is named ``ml-1m-subset`` either way unless
    the full file was read.
    """
    path = Path(path)
    items = _read_movies(path)
    full = path / "ratings.dat"
    rating_file = full if full.exists() else path / "ratings.PARTIAL_users_1-2999.dat"
    ratings = _read_ratings(rating_file)
    name = "ml-1m" if rating_file == full else "ml-1m-subset"
    return Dataset(name, items, _ratings(ratings, "ml1m-"))
