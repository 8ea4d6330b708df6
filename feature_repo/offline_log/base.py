"""The offline-log port: append-only history of feature rows and raw events.

Feast's file offline store rewrites the whole parquet file on every write, so a
streaming writer that appends a batch per second would copy the table each time.
The log instead appends in O(batch) and is idempotent: a row's identity is its
``LogSpec.key`` (entity id, event_timestamp), and reading back never shows a key twice
even after a batch is replayed following a crash. First write wins, as with
PostgreSQL's ``ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from feature_repo.schema import CREATED_TS, EVENT_TS, LogSpec, spec, utc_times

#: An opaque position in a log (``OfflineLog.read_new``).
Cursor = object


class OfflineLog(ABC):
    """One implementation per backend (parquet directory, PostgreSQL table)."""

    @abstractmethod
    def append(self, name: str, df: pd.DataFrame) -> int:
        """Durably add the rows of ``df`` to log ``name``; return rows newly stored.

        When this returns, the rows survive a crash (the caller may commit its Kafka
        offsets). Rows whose key is already stored are not stored again; a backend that
        cannot tell cheaply may store them and drop them on read instead.
        """

    @abstractmethod
    def read_offline(
        self, name: str, start: datetime | None = None, end: datetime | None = None
    ) -> pd.DataFrame:
        """Rows with ``start <= event_timestamp < end``, one per key, sorted by key."""

    @abstractmethod
    def read_new(self, name: str, cursor: Cursor | None = None) -> tuple[pd.DataFrame, Cursor]:
        """Rows stored since ``cursor`` was returned (all rows when None), and the next cursor.

        Why: a poller that wants "what is new" by event time must reach back by a slack
        (writers' clocks, late commits) and so re-reads every recent row on every poll;
        this reads by insertion instead. It never misses a row stored after ``cursor`` was
        made, even one whose transaction began before; it may return a row again (at
        least once), never twice within one answer (one row per key, as ``read_offline``).
        A cursor is opaque and belongs to the log that made it.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (no-op by default)."""


def to_table(log: LogSpec, df: pd.DataFrame) -> pa.Table:
    """Validate and convert a batch to the log's arrow schema.

    A missing ``created`` column is filled with the write time; extra or missing
    columns are an error rather than silently dropped or nulled.
    """
    df = df.copy(deep=False)
    if CREATED_TS not in df.columns:
        df[CREATED_TS] = pd.Timestamp(datetime.now(UTC))
    missing = [c for c in log.column_names if c not in df.columns]
    extra = [c for c in df.columns if c not in log.column_names]
    if missing or extra:
        raise ValueError(f"{log.name}: missing columns {missing}, unexpected columns {extra}")
    for ts in (EVENT_TS, CREATED_TS):
        df[ts] = utc_times(df[ts])
    for k in log.key:
        if df[k].isna().any():
            raise ValueError(f"{log.name}: key column {k!r} has nulls")
    schema = log.arrow_schema()
    arrays = []
    for f in schema:
        values = df[f.name]
        if pa.types.is_list(f.type):
            arrays.append(_list_array(values, f.type))
        else:
            arrays.append(pa.array(values, f.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def _list_array(values: pd.Series, type_: pa.ListType) -> pa.Array:
    """Vectors as a list column; equal-width rows go through one numpy copy, not Python."""
    rows = values.to_list()
    if rows and all(r is not None for r in rows):
        widths = {len(r) for r in rows}
        if len(widths) == 1:
            width = widths.pop()
            flat = np.asarray(rows, dtype=np.float32).reshape(-1)
            offsets = np.arange(0, (len(rows) + 1) * width, width, dtype=np.int32)
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), type=type_)
    return pa.array([None if r is None else list(r) for r in rows], type_)


def dedup(log: LogSpec, df: pd.DataFrame) -> pd.DataFrame:
    """Keep the first-written row per key (earliest ``created``), sorted by key."""
    if df.empty:
        return df
    df = df.sort_values(CREATED_TS, kind="stable").drop_duplicates(list(log.key), keep="first")
    return df.sort_values(list(log.key), kind="stable").reset_index(drop=True)


__all__ = ["Cursor", "OfflineLog", "dedup", "spec", "to_table"]
