"""Parquet backend of the offline log: one directory per log, one immutable file per batch.

Why this layout:

* **Append cost is O(batch).** A batch becomes a new part file; nothing existing is
  read or rewritten, so the cost does not grow with the table. Feast's dask/file
  offline store reads the directory as one dataset (``dd.read_parquet(dir)``), so
  the ``FileSource`` of each view simply points at the directory.
* **Crash safety.** A part is written to a ``.tmp-*`` file in ``<root>/.staging`` (on
  the same file system, outside every log's directory), fsynced, then atomically renamed
  into the log. Feast's file offline store lists a log's directory and then opens what
  it found: a temp file inside it, renamed in between, failed a point-in-time read
  (the retrain job's) with ``FileNotFoundError`` while a consumer appended.
  A crash leaves either no trace of the batch or the whole batch; never half of it,
  and nothing already stored is touched.
* **Idempotent replay.** The part's name is a digest of the batch's keys, so replaying
  the same batch finds its file and writes nothing. A replay with different batch
  boundaries does write rows again; reads drop them (first write per key wins), and
  ``compact`` folds them away. No step deletes a row before its replacement is durable.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from feature_repo.offline_log.base import Cursor, OfflineLog, dedup, to_table
from feature_repo.schema import EVENT_TS, LogSpec, spec

logger = logging.getLogger(__name__)

_SCHEMA_PART = "part-0-schema.parquet"
_STALE_TMP_S = 3600.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(table: pa.Table, final: Path, staging: Path | None = None) -> None:
    tmp = (staging or final.parent) / f".tmp-{uuid.uuid4().hex}.parquet"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(final.parent)


def batch_digest(log: LogSpec, table: pa.Table) -> str:
    """A name for the batch that depends only on its keys (same keys, same file)."""
    h = hashlib.sha256(log.name.encode())
    for k in log.key:
        col = table.column(k)
        if pa.types.is_timestamp(col.type):
            col = pc.cast(col, pa.int64())
        for chunk in col.cast(pa.string()).chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(buf)
    return h.hexdigest()[:32]


class ParquetOfflineLog(OfflineLog):
    """Logs under ``root/<name>/part-*.parquet`` (``root`` is ``<data_dir>/offline``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.staging = self.root / ".staging"  # temp parts: never in a log's directory

    def path(self, name: str) -> Path:
        return self.root / spec(name).name

    def ensure(self, name: str) -> Path:
        """Create the log directory with an empty, schema-only part.

        Dask cannot read an empty directory, and a view must be readable (as empty)
        before its first batch arrives.
        """
        log = spec(name)
        d = self.path(name)
        d.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(exist_ok=True)
        if not (d / _SCHEMA_PART).exists():
            _write_atomic(log.arrow_schema().empty_table(), d / _SCHEMA_PART, self.staging)
        self._sweep(d)  # temp files of versions that wrote them in the log's directory
        self._sweep(self.staging)
        return d

    def _sweep(self, d: Path) -> None:
        """Remove temp files of writers that died; young ones may belong to live writers."""
        now = time.time()
        for p in d.glob(".tmp-*"):
            try:
                if now - p.stat().st_mtime > _STALE_TMP_S:
                    p.unlink()
                    logger.info("removed stale temp file %s", p)
            except FileNotFoundError:
                pass

    def append(self, name: str, df: pd.DataFrame) -> int:
        log = spec(name)
        table = to_table(log, df)
        if table.num_rows == 0:
            return 0
        d = self.path(name)
        if not (d / _SCHEMA_PART).exists():
            self.ensure(name)
        final = d / f"part-{batch_digest(log, table)}.parquet"
        if final.exists():
            logger.info("%s: batch %s already stored; skipping replay", name, final.name)
            return 0
        self.staging.mkdir(exist_ok=True)
        _write_atomic(table, final, self.staging)
        return table.num_rows

    def _dataset(self, log: LogSpec) -> ds.Dataset:
        return ds.dataset(
            str(self.path(log.name)), format="parquet", schema=log.arrow_schema()
        )  # default ignore_prefixes skip '.tmp-*' and '_*'

    def read_offline(
        self, name: str, start: datetime | None = None, end: datetime | None = None
    ) -> pd.DataFrame:
        log = spec(name)
        if not self.path(name).exists():
            return log.arrow_schema().empty_table().to_pandas()
        flt = None
        ts = ds.field(EVENT_TS)
        if start is not None:
            flt = ts >= pa.scalar(pd.Timestamp(start).tz_convert("UTC"), pa.timestamp("us", "UTC"))
        if end is not None:
            cond = ts < pa.scalar(pd.Timestamp(end).tz_convert("UTC"), pa.timestamp("us", "UTC"))
            flt = cond if flt is None else flt & cond
        table = self._dataset(log).to_table(filter=flt)
        return dedup(log, table.to_pandas())

    def read_new(
        self, name: str, cursor: Cursor | None = None
    ) -> tuple[pd.DataFrame, frozenset[str]]:
        """Rows of the parts that were not there when ``cursor`` was made.

        A part appears whole (renamed into place), so the part names listed are the
        cursor. A compaction's part holds old rows again: they come back once, as the
        contract allows. The listing costs O(parts); ``compact`` keeps that small.
        """
        log = spec(name)
        d = self.path(name)
        if cursor is not None and not isinstance(cursor, frozenset):
            raise TypeError(f"not a cursor of a parquet log: {type(cursor).__name__}")
        seen = cursor or frozenset()
        listed = frozenset(p.name for p in d.glob("part-*.parquet")) if d.exists() else seen
        new = sorted(listed - seen - {_SCHEMA_PART})
        if not new:
            return log.arrow_schema().empty_table().to_pandas(), listed
        table = ds.dataset(
            [str(d / n) for n in new], format="parquet", schema=log.arrow_schema()
        ).to_table()
        return dedup(log, table.to_pandas()), listed

    def parts(self, name: str) -> list[Path]:
        return sorted(self.path(name).glob("part-*.parquet"))

    def compact(self, name: str) -> int:
        """Fold all parts into one de-duplicated part; return the rows kept.

        The new part is durable before any old part is removed, so a crash in between
        leaves duplicates (dropped on read), never a loss. Not for concurrent use with
        ``append`` on the same log: a part written during compaction is kept, but its
        rows may be duplicated in the compacted part if it was read.
        """
        log = spec(name)
        old = [p for p in self.parts(name) if p.name != _SCHEMA_PART]
        if len(old) <= 1:
            return sum(pq.read_metadata(p).num_rows for p in old)
        table = ds.dataset([str(p) for p in old], format="parquet", schema=log.arrow_schema())
        df = dedup(log, table.to_table().to_pandas())
        out = pa.Table.from_pandas(df, schema=log.arrow_schema(), preserve_index=False)
        self.staging.mkdir(exist_ok=True)
        _write_atomic(
            out, self.path(name) / f"part-compact-{uuid.uuid4().hex}.parquet", self.staging
        )
        for p in old:
            p.unlink()
        _fsync_dir(self.path(name))
        return out.num_rows
