"""The columnar data set every trainer and benchmark reads.

A data set is the item catalogue (as ``ItemCreated`` events, so item text goes through
the one template in ``learn_core.item_text``) plus an interaction table. Readers for
each source live next to this module and all return the same shape, so the trainers
never know where the data came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from learn_core.events import ItemCreated

#: The interaction table's columns, in order.
INTERACTION_COLUMNS = ["event_id", "user_id", "item_id", "event_type", "value", "occurred_at"]

#: A MovieLens rating at or above this many stars counts as a conversion.
RATING_CONVERSION_THRESHOLD = 4.0


def is_conversion(event_type: str, value: float | None) -> bool:
    """The single definition of the CVR label: a purchase, or a rating of 4 stars or more."""
    if event_type == "purchase":
        return True
    if event_type == "rating":
        return value is not None and not math.isnan(value) and value >= RATING_CONVERSION_THRESHOLD
    return False


def conversion_labels(interactions: pd.DataFrame) -> np.ndarray:
    """Vectorised ``is_conversion`` over an interaction table (bool array)."""
    kind = interactions["event_type"].to_numpy()
    value = interactions["value"].to_numpy(dtype=float)
    rated = (kind == "rating") & (np.nan_to_num(value, nan=-1.0) >= RATING_CONVERSION_THRESHOLD)
    return (kind == "purchase") | rated


@dataclass
class Dataset:
    """Items plus a time-sorted interaction table (see ``INTERACTION_COLUMNS``)."""

    name: str
    items: list[ItemCreated]
    interactions: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing:
            raise ValueError(f"interactions lack columns {missing}")
        known = {it.item_id for it in self.items}
        unknown = set(self.interactions["item_id"].unique()) - known
        if unknown:
            raise ValueError(f"{len(unknown)} interacted items are not in the catalogue")

    @property
    def item_ids(self) -> list[str]:
        return [it.item_id for it in self.items]

    def summary(self) -> dict[str, int]:
        df = self.interactions
        return {
            "items": len(self.items),
            "users": int(df["user_id"].nunique()),
            "interactions": len(df),
        }


def normalise_interactions(df: pd.DataFrame) -> pd.DataFrame:
    """Cast to the canonical dtypes and sort by (time, user, event id) so order is stable."""
    out = pd.DataFrame(
        {
            "event_id": df["event_id"].astype(str),
            "user_id": df["user_id"].astype(str),
            "item_id": df["item_id"].astype(str),
            "event_type": df["event_type"].astype(str),
            "value": pd.to_numeric(df["value"], errors="coerce").astype(float),
            "occurred_at": pd.to_datetime(df["occurred_at"], utc=True).astype(
                "datetime64[ns, UTC]"
            ),
        }
    )
    out = out.sort_values(["occurred_at", "user_id", "event_id"], kind="stable")
    return out.reset_index(drop=True)
