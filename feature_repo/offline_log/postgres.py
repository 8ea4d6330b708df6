"""PostgreSQL backend of the offline log: one table per log with its key as primary key.

A batch is COPYed into a temporary staging table and moved with
``INSERT .. ON CONFLICT DO NOTHING`` in one transaction: the cost is the batch plus a
B-tree probe per row (logarithmic in the table size), a replay inserts nothing, and the
commit is the durability point.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from feature_repo.offline_log.base import OfflineLog, to_table
from feature_repo.schema import EVENT_TS, LogSpec, spec

logger = logging.getLogger(__name__)


def _pg_type(t: pa.DataType) -> str:
    if pa.types.is_string(t):
        return "text"
    if pa.types.is_timestamp(t):
        return "timestamptz"
    if pa.types.is_int64(t):
        return "int8"
    if pa.types.is_float64(t):
        return "float8"
    if pa.types.is_list(t) and pa.types.is_float32(t.value_type):
        return "float4[]"
    raise TypeError(f"no PostgreSQL type for {t}")


def ddl(log: LogSpec, table: str) -> str:
    cols = ", ".join(
        f'"{c}" {_pg_type(t)}{" NOT NULL" if c in log.key else ""}' for c, t in log.columns
    )
    key = ", ".join(f'"{k}"' for k in log.key)
    return f'CREATE TABLE IF NOT EXISTS "{table}" ({cols}, PRIMARY KEY ({key}))'


class PostgresOfflineLog(OfflineLog):
    """Logs as tables named by ``table_name(log)`` (``<project>_<log>``) in one database.

    One connection serves every caller, so each use holds ``_lock``: a psycopg
    connection is not safe for two threads at once (a consumer appending while a
    reader counts nests their transactions and fails the commit).
    """

    def __init__(self, conninfo: str, project: str) -> None:
        import psycopg

        self.project = project
        self._conn = psycopg.connect(conninfo, autocommit=False)
        self._lock = threading.RLock()
        self._ready: set[str] = set()

    def table_name(self, name: str) -> str:
        return f"{self.project}_{spec(name).name}"

    def ensure(self, name: str) -> str:
        table = self.table_name(name)
        if table not in self._ready:
            with self._lock, self._conn.transaction():
                self._conn.execute(ddl(spec(name), table))  # type: ignore[arg-type]
            self._ready.add(table)
        return table

    def append(self, name: str, df: pd.DataFrame) -> int:
        log = spec(name)
        batch = to_table(log, df)
        if batch.num_rows == 0:
            return 0
        table = self.ensure(name)
        cols = ", ".join(f'"{c}"' for c in log.column_names)
        stage = f"_stage_{table}"
        rows = _rows(log, batch)
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(
                f'CREATE TEMP TABLE IF NOT EXISTS "{stage}" '  # type: ignore[arg-type]
                f'(LIKE "{table}" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS'
            )
            # Binary COPY: 8x faster than text for 384-d vectors (no float formatting).
            with cur.copy(
                f'COPY "{stage}" ({cols}) FROM STDIN (FORMAT BINARY)'  # type: ignore[arg-type]
            ) as copy:
                copy.set_types([_pg_type(t) for _, t in log.columns])
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM "{stage}" '  # type: ignore[arg-type]
                "ON CONFLICT DO NOTHING"
            )
            inserted = cur.rowcount
        return inserted

    def read_offline(
        self, name: str, start: datetime | None = None, end: datetime | None = None
    ) -> pd.DataFrame:
        log = spec(name)
        table = self.ensure(name)
        where, params = [], []
        if start is not None:
            where.append(f'"{EVENT_TS}" >= %s')
            params.append(start)
        if end is not None:
            where.append(f'"{EVENT_TS}" < %s')
            params.append(end)
        cols = ", ".join(f'"{c}"' for c in log.column_names)
        sql = f'SELECT {cols} FROM "{table}"'
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY " + ", ".join(f'"{k}"' for k in log.key)
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(sql, params)  # type: ignore[arg-type]
            data = cur.fetchall()
        df = pd.DataFrame(data, columns=log.column_names)
        for c, t in log.columns:
            if pa.types.is_list(t):
                df[c] = [None if v is None else np.asarray(v, dtype=np.float32) for v in df[c]]
            elif pa.types.is_timestamp(t):
                df[c] = pd.to_datetime(df[c], utc=True)
            elif pa.types.is_float64(t):
                df[c] = df[c].astype("float64")
            elif pa.types.is_int64(t):
                df[c] = df[c].astype("Int64" if df[c].isna().any() else "int64")
        return df

    def count(self, name: str) -> int:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM "{self.ensure(name)}"')  # type: ignore[arg-type]
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def drop(self, name: str) -> None:
        """Drop a log's table (tests and benchmarks clean up with this)."""
        table = self.table_name(name)
        with self._lock, self._conn.transaction():
            self._conn.execute(f'DROP TABLE IF EXISTS "{table}"')  # type: ignore[arg-type]
        self._ready.discard(table)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _rows(log: LogSpec, batch: pa.Table) -> list[list[Any]]:
    """Python rows for COPY; vectors as lists of floats (psycopg adapts them to real[])."""
    cols: list[list[Any]] = []
    for c, t in log.columns:
        arr = batch.column(c)
        if pa.types.is_list(t):
            flat = arr.combine_chunks()
            values = flat.values.to_numpy(zero_copy_only=False)
            offsets = flat.offsets.to_numpy()
            valid = flat.is_valid().to_numpy(zero_copy_only=False)
            cols.append(
                [
                    values[offsets[i] : offsets[i + 1]].tolist() if valid[i] else None
                    for i in range(len(flat))
                ]
            )
        else:
            cols.append(arr.to_pylist())
    return [list(r) for r in zip(*cols, strict=True)]
