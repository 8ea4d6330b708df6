"""Candidate retrieval: top-K items for a user by inner product, per model version.

Two backends behind one port (``Retrieval``):

* ``ExactRetrieval`` (embedded default): an in-process ``ExactIndex`` of the serving
  version's item-tower vectors.
* ``PgVectorRetrieval`` (production): the vectors in a pgvector table next to the
  offline store, searched with ``ORDER BY embedding <#> q`` (exact scan; add an HNSW
  index for large catalogues). Chosen when the ``vector`` extension can be created;
  otherwise ``make_retrieval`` logs why and falls back to the exact index.

Both are fed from the offline ``item_tower_embedding`` log: a full read of the serving
version when it changes, then every ``refresh_s`` the rows stored since the last read
(``OfflineLog.read_new``: by insertion, so rows committed late are not missed and an idle
poll reads nothing). Rows are upserts that keep each item's newest row by event time, so
reading a row twice, or an older row late, is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from feature_repo.schema import ITEM_TOWER, utc_times
from ranking.core import ExactIndex

if TYPE_CHECKING:
    from feature_repo.offline_log.base import Cursor
    from feature_repo.store import FeatureStoreHandle
    from ranking.settings import RankingSettings

log = logging.getLogger(__name__)


class Retrieval(Protocol):
    backend: str

    def search(
        self, version: str, dim: int, query: np.ndarray, k: int, exclude: set[str]
    ) -> tuple[list[str], np.ndarray]: ...

    def refresh(self) -> int: ...

    def size(self) -> int: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


def latest_rows(df: pd.DataFrame, version: str) -> pd.DataFrame:
    """The newest row per item among rows of ``version``."""
    df = df[df["model_version"] == version]
    return df.sort_values("event_timestamp", kind="stable").drop_duplicates("item_id", keep="last")


class _Feed:
    """Incremental reader of one version's item-tower rows from the offline log.

    It reads by insertion (``OfflineLog.read_new``), so a poll reads only what was stored
    since the last one, late commits included; an idle poll reads nothing. Rows may come
    again (at least once) or late, so the index keeps each item's newest row by event time
    (``stamps``).
    """

    def __init__(self, handle: FeatureStoreHandle) -> None:
        self.handle = handle
        self.version: str | None = None
        self.cursor: Cursor | None = None

    def reset(self, version: str) -> pd.DataFrame:
        rows, self.cursor = self.handle.read_new(ITEM_TOWER.name)
        self.version = version
        return latest_rows(rows, version)

    def poll(self) -> pd.DataFrame:
        assert self.version is not None
        rows, self.cursor = self.handle.read_new(ITEM_TOWER.name, self.cursor)
        return rows if rows.empty else latest_rows(rows, self.version)


def stamps(rows: pd.DataFrame) -> np.ndarray:
    """The rows' event times as int64 nanoseconds since the epoch (UTC)."""
    ts = utc_times(rows["event_timestamp"])
    return ts.dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)


def _add(index: ExactIndex, rows: pd.DataFrame) -> None:
    """Upsert a feed's rows into ``index``, each replacing only an older row of its item."""
    if len(rows):
        index.upsert(list(rows["item_id"]), np.stack(rows["embedding"].to_numpy()), stamps(rows))


class _Refresher:
    """A daemon thread calling ``refresh`` every ``period`` seconds."""

    def __init__(self, target: Retrieval, period: float) -> None:
        self.target = target
        self.period = period
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="index-refresh", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            try:
                self.target.refresh()
            except Exception:  # keep serving the last good index; say why
                log.exception("index refresh failed; serving the previous index")

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


class ExactRetrieval:
    """Exact in-process index of the serving version (embedded profile)."""

    backend = "exact"

    def __init__(self, handle: FeatureStoreHandle, refresh_s: float = 0.5) -> None:
        self.feed = _Feed(handle)
        self.index: ExactIndex | None = None
        self._lock = threading.Lock()
        self._refresher = _Refresher(self, refresh_s)

    def _ensure(self, version: str, dim: int) -> ExactIndex:
        idx = self.index
        if idx is not None and idx.model_version == version:
            return idx
        with self._lock:
            if self.index is None or self.index.model_version != version:
                t0 = time.monotonic()
                rows = self.feed.reset(version)
                fresh = ExactIndex(version, dim)
                _add(fresh, rows)
                self.index = fresh
                log.info(
                    "exact index for %s: %d items in %.2fs",
                    version,
                    len(fresh),
                    time.monotonic() - t0,
                )
            return self.index

    def refresh(self) -> int:
        """Add rows written since the last read; returns how many rows were read."""
        with self._lock:
            idx = self.index
            if idx is None:
                return 0
            rows = self.feed.poll()
            _add(idx, rows)
            return len(rows)

    def search(
        self, version: str, dim: int, query: np.ndarray, k: int, exclude: set[str]
    ) -> tuple[list[str], np.ndarray]:
        return self._ensure(version, dim).search(query, k, exclude)

    def size(self) -> int:
        return len(self.index) if self.index is not None else 0

    def start(self) -> None:
        self._refresher.start()

    def close(self) -> None:
        self._refresher.close()


class PgVectorUnavailable(RuntimeError):
    pass


class PgVectorRetrieval:
    """Item-tower vectors in a pgvector table; search by negative inner product (``<#>``)."""

    backend = "pgvector"

    def __init__(self, handle: FeatureStoreHandle, refresh_s: float = 0.5) -> None:
        import psycopg

        from feature_repo.store import pg_conninfo

        self.handle = handle
        self.table = f"{handle.settings.project}_item_tower_vec"
        try:
            self.conn = psycopg.connect(pg_conninfo(handle.settings), autocommit=True)
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise PgVectorUnavailable(str(exc).strip().splitlines()[0]) from exc
        self.feed = _Feed(handle)
        self._lock = threading.Lock()
        self._dims: dict[str, int] = {}
        self._refresher = _Refresher(self, refresh_s)

    def _ensure(self, version: str, dim: int) -> None:
        if self.feed.version == version:
            return
        with self._lock:
            if self.feed.version == version:
                return
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (model_version text NOT NULL, "
                f"item_id text NOT NULL, embedding vector({dim}) NOT NULL, "
                "event_timestamp timestamptz, PRIMARY KEY (model_version, item_id))"
            )
            # Tables of earlier releases: their rows' times are unknown (null), so the
            # next row read for such an item replaces it.
            self.conn.execute(
                f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS event_timestamp timestamptz"
            )
            self._upsert(self.feed.reset(version))
            self._dims[version] = dim

    def _upsert(self, rows: pd.DataFrame) -> None:
        if rows.empty:
            return
        data = [
            (r.model_version, r.item_id, _vec_literal(r.embedding), r.event_timestamp)
            for r in rows.itertuples(index=False)
        ]
        with self.conn.cursor() as cur:
            # Newest row wins, as in ``ExactIndex``: a row read again or late is skipped.
            cur.executemany(
                f"INSERT INTO {self.table} AS t (model_version, item_id, embedding, "
                "event_timestamp) VALUES (%s, %s, %s::vector, %s) "
                "ON CONFLICT (model_version, item_id) DO UPDATE SET "
                "embedding = EXCLUDED.embedding, event_timestamp = EXCLUDED.event_timestamp "
                "WHERE t.event_timestamp IS NULL OR EXCLUDED.event_timestamp > t.event_timestamp",
                data,
            )

    def refresh(self) -> int:
        with self._lock:
            if self.feed.version is None:
                return 0
            rows = self.feed.poll()
            self._upsert(rows)
            return len(rows)

    def search(
        self, version: str, dim: int, query: np.ndarray, k: int, exclude: set[str]
    ) -> tuple[list[str], np.ndarray]:
        self._ensure(version, dim)
        q = _vec_literal(query)
        with self._lock:
            got = self.conn.execute(
                f"SELECT item_id, -(embedding <#> %s::vector) FROM {self.table} "
                "WHERE model_version = %s AND NOT (item_id = ANY(%s)) "
                "ORDER BY embedding <#> %s::vector LIMIT %s",
                (q, version, list(exclude), q, k),
            ).fetchall()
        return [r[0] for r in got], np.asarray([r[1] for r in got], np.float32)

    def size(self) -> int:
        if self.feed.version is None:
            return 0
        row = self.conn.execute(
            f"SELECT count(*) FROM {self.table} WHERE model_version = %s", (self.feed.version,)
        ).fetchone()
        return int(row[0]) if row else 0

    def start(self) -> None:
        self._refresher.start()

    def close(self) -> None:
        self._refresher.close()
        self.conn.close()


def _vec_literal(v: object) -> str:
    return "[" + ",".join(f"{x:.8g}" for x in np.asarray(v, np.float32)) + "]"


def make_retrieval(handle: FeatureStoreHandle, settings: RankingSettings) -> Retrieval:
    """pgvector in production when available (or forced), else the exact index."""
    want = settings.retrieval
    if want == "exact" or (want == "auto" and handle.settings.profile != "production"):
        return ExactRetrieval(handle, settings.index_refresh_s)
    try:
        return PgVectorRetrieval(handle, settings.index_refresh_s)
    except PgVectorUnavailable as exc:
        if want == "pgvector":
            raise
        log.warning(
            "pgvector not available in PostgreSQL (%s); falling back to the exact "
            "in-process index (set LEARNREC_RANKING_RETRIEVAL=exact to silence this)",
            exc,
        )
        return ExactRetrieval(handle, settings.index_refresh_s)
