"""The feature rows one interaction batch writes: its interaction log and its user embeddings.

Pure frame builders, apart from the handler so that each can be checked against a
reference frame. Times go through exact integer micro/milliseconds (the stores'
resolution): converting a list of ``datetime`` objects costs more than the rest of a frame.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from learn_core.events import Interaction
from learn_core.history import BatchPlan, to_us
from streaming.held_items import Partial


def interaction_rows(events: list[Interaction], created: pd.Timestamp) -> pd.DataFrame:
    """The offline ``interaction_log`` rows of a batch (duplicates collapse on read)."""
    us = np.fromiter((to_us(e.occurred_at) for e in events), dtype=np.int64, count=len(events))
    return pd.DataFrame(
        {
            "event_id": [e.event_id for e in events],
            "user_id": [e.user_id for e in events],
            "item_id": [e.item_id for e in events],
            "event_type": [e.event_type for e in events],
            "value": np.asarray(
                [np.nan if e.value is None else e.value for e in events], dtype=np.float64
            ),
            "event_timestamp": pd.to_datetime(us, unit="us", utc=True),
            "created": created,
        }
    )


def user_rows(
    plan: BatchPlan,
    vecs: np.ndarray,
    version: str,
    created: pd.Timestamp,
    window: int | None = None,
) -> pd.DataFrame:
    """The user-embedding rows of the plan's ready users; event time = newest item's time.

    ``history_len`` counts the items the embedding read: at most ``window``.
    """
    ready = plan.ready
    cap = window if window is not None else np.iinfo(np.int64).max
    latest = np.asarray([plan.histories[u].latest_ms for u in ready], dtype=np.int64)
    return pd.DataFrame(
        {
            "user_id": ready,
            "embedding": list(vecs),
            "model_version": version,
            "history_len": np.asarray(
                [min(len(plan.histories[u]), cap) for u in ready], dtype=np.int64
            ),
            "event_timestamp": pd.to_datetime(latest, unit="ms", utc=True),
            "created": created,
        }
    )


def partial_rows(
    partial: Mapping[str, Partial],
    vecs: np.ndarray,
    version: str,
    created: pd.Timestamp,
    window: int | None = None,
) -> pd.DataFrame:
    """The rows of users embedded without their missing items (``streaming.held_items``):
    ``history_len`` counts the items read, the event time is ``Partial.event_us``."""
    users = list(partial)
    cap = window if window is not None else np.iinfo(np.int64).max
    us = np.asarray([partial[u].event_us for u in users], dtype=np.int64)
    return pd.DataFrame(
        {
            "user_id": users,
            "embedding": list(vecs),
            "model_version": version,
            "history_len": np.asarray([min(len(partial[u].items), cap) for u in users], np.int64),
            "event_timestamp": pd.to_datetime(us, unit="us", utc=True),
            "created": created,
        }
    )
