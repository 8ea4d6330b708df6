"""Table contracts shared by the Feast definitions and the offline-log adapters.

Pure data (pyarrow types only, no Feast import) so that the offline log and its unit
tests load fast. ``definitions.py`` turns these into Feast objects; the parquet and
PostgreSQL logs turn them into file schemas and DDL.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

EVENT_TS = "event_timestamp"
CREATED_TS = "created"

_TS = pa.timestamp("us", tz="UTC")
_VEC = pa.list_(pa.float32())


@dataclass(frozen=True)
class LogSpec:
    """One append-only table: a feature view's history or a raw event log.

    ``key`` is the idempotency key: two rows with the same key are the same fact, so a
    replayed batch never shows up twice when read back.
    """

    name: str
    columns: tuple[tuple[str, pa.DataType], ...]
    key: tuple[str, ...]
    #: Join key of the Feast entity (``None`` for logs that are not feature views).
    join_key: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    @property
    def feature_names(self) -> list[str]:
        skip = {self.join_key, EVENT_TS, CREATED_TS}
        return [c for c, _ in self.columns if c not in skip]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c, t, nullable=c not in self.key) for c, t in self.columns])


def _embedding_view(name: str, join_key: str, *extra: tuple[str, pa.DataType]) -> LogSpec:
    cols = (
        (join_key, pa.string()),
        ("embedding", _VEC),
        ("model_version", pa.string()),
        *extra,
        (EVENT_TS, _TS),
        (CREATED_TS, _TS),
    )
    return LogSpec(name=name, columns=cols, key=(join_key, EVENT_TS), join_key=join_key)


ITEM_CONTENT = _embedding_view("item_content_embedding", "item_id")
ITEM_TOWER = _embedding_view("item_tower_embedding", "item_id")
USER_TOWER = _embedding_view("user_tower_embedding", "user_id", ("history_len", pa.int64()))

INTERACTION_LOG = LogSpec(
    name="interaction_log",
    columns=(
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),
        ("value", pa.float64()),
        (EVENT_TS, _TS),
        (CREATED_TS, _TS),
    ),
    # An interaction is identified by its event id; the timestamp is part of the key so
    # that every log shares the (id, event_timestamp) convention of the brief.
    key=("event_id", EVENT_TS),
)

VIEWS: dict[str, LogSpec] = {s.name: s for s in (ITEM_CONTENT, ITEM_TOWER, USER_TOWER)}
LOGS: dict[str, LogSpec] = {**VIEWS, INTERACTION_LOG.name: INTERACTION_LOG}


def _stats_view(name: str, join_key: str, *extra: tuple[str, pa.DataType]) -> LogSpec:
    """A ranking team's running statistics of one entity, one row per change.

    Times are epoch seconds (a recency is the request's time less ``last_event_s``, so it
    is computed at the join, never stored stale).
    """
    cols = (
        (join_key, pa.string()),
        ("events", pa.int64()),
        ("conversions", pa.int64()),
        ("first_event_s", pa.float64()),
        ("last_event_s", pa.float64()),
        *extra,
        (EVENT_TS, _TS),
        (CREATED_TS, _TS),
    )
    return LogSpec(name=name, columns=cols, key=(join_key, EVENT_TS), join_key=join_key)


#: Views a ranking team keeps beside LEARN's (``feature_repo.ranker``, ``bench.ranker``):
#: its own statistics, and an ID model's vectors as the baseline LEARN is measured against.
#: Not created in a product store unless used.
USER_STATS = _stats_view("ranker_user_stats", "user_id")
ITEM_STATS = _stats_view("ranker_item_stats", "item_id", ("category", pa.string()))
ID_USER = _embedding_view("ranker_id_user_embedding", "user_id")
ID_ITEM = _embedding_view("ranker_id_item_embedding", "item_id")
RANKER_VIEWS: dict[str, LogSpec] = {s.name: s for s in (USER_STATS, ITEM_STATS, ID_USER, ID_ITEM)}


def spec(name: str) -> LogSpec:
    try:
        return LOGS.get(name) or RANKER_VIEWS[name]
    except KeyError:
        raise KeyError(f"unknown log {name!r}; known: {sorted(LOGS)}") from None


def utc_times(col: pd.Series) -> pd.Series:
    """``pd.to_datetime(col, utc=True)``, without its per-value walk on typed columns.

    On a column that is already tz-aware, ``to_datetime`` still iterates the values as
    ``Timestamp`` objects to decide on caching (~2 us per row, on every online and
    offline write of the consumer); converting the zone is vectorised and gives the same
    values.
    """
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        return col.dt.tz_convert("UTC")
    return pd.to_datetime(col, utc=True)
