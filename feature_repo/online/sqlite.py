"""Fast raw reads from Feast's SQLite online store (the embedded profile)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from feature_repo.online.base import RawPair, Request


class SqliteRawSource:
    """One ``IN (...)`` query per view on Feast's SQLite table (read-only, one per thread).

    Feast's own connection parses every ``event_ts`` into a datetime; this one reads
    only the two value blobs.
    """

    #: Below SQLite's smallest default limit on bound parameters (999 before 3.32).
    CHUNK = 900

    def __init__(self, db_path: str, tables: dict[str, str], keys: dict[str, Callable]) -> None:
        self.uri = Path(db_path).resolve().as_uri() + "?mode=ro"
        self.tables = {v: '"' + t.replace('"', '""') + '"' for v, t in tables.items()}
        self.keys = keys
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.uri, uri=True)
            self._local.conn = conn
        return conn

    def fetch(self, requests: Sequence[Request]) -> list[list[RawPair]]:
        conn = self._conn()
        out: list[list[RawPair]] = []
        for view, ids in requests:
            enc = self.keys[view]
            keys = [enc(i) for i in ids]
            found: dict[bytes, list[bytes | None]] = {}
            for start in range(0, len(keys), self.CHUNK):
                part = keys[start : start + self.CHUNK]
                sql = (
                    f"SELECT entity_key, feature_name, value FROM {self.tables[view]} "
                    "WHERE feature_name IN ('embedding', 'model_version') "
                    f"AND entity_key IN ({','.join('?' * len(part))})"
                )
                for key, name, value in conn.execute(sql, part):
                    found.setdefault(key, [None, None])[name == "model_version"] = value
            none: list[bytes | None] = [None, None]
            out.append([(p[0], p[1]) for p in (found.get(k, none) for k in keys)])
        return out
