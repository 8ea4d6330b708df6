"""Embedding cache keyed by (model id, text hash).

A duplicated or replayed item event must cost no model time, also after a
restart, so the cache has two layers: an in-process LRU and an optional SQLite
file shared by the consumers of one machine (WAL mode: concurrent readers).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from learn_core.embedding.base import ContentEmbedder
from learn_core.item_text import text_hash


class EmbeddingCache:
    """LRU in memory, optionally backed by a SQLite file."""

    def __init__(self, max_entries: int = 100_000, path: Path | None = None) -> None:
        self.max_entries = max_entries
        self._lru: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS emb (model TEXT, hash TEXT, vec BLOB, "
                "PRIMARY KEY (model, hash))"
            )
            self._db.commit()

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        missing: list[str] = []
        with self._lock:
            for h in hashes:
                v = self._lru.get((model, h))
                if v is None:
                    missing.append(h)
                else:
                    self._lru.move_to_end((model, h))
                    found[h] = v
            if self._db is not None and missing:
                for i in range(0, len(missing), 500):
                    chunk = missing[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(
                        f"SELECT hash, vec FROM emb WHERE model=? AND hash IN ({marks})",
                        [model, *chunk],
                    ).fetchall()
                    for h, blob in rows:
                        v = np.frombuffer(blob, dtype=np.float32)
                        found[h] = v
                        self._put_lru(model, h, v)
        return found

    def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            for h, v in items.items():
                self._put_lru(model, h, np.asarray(v, dtype=np.float32))
            if self._db is not None and items:
                self._db.executemany(
                    "INSERT OR IGNORE INTO emb VALUES (?, ?, ?)",
                    [(model, h, np.asarray(v, np.float32).tobytes()) for h, v in items.items()],
                )
                self._db.commit()

    def _put_lru(self, model: str, h: str, v: np.ndarray) -> None:
        self._lru[(model, h)] = v
        self._lru.move_to_end((model, h))
        while len(self._lru) > self.max_entries:
            self._lru.popitem(last=False)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class CachedEmbedder:
    """A ``ContentEmbedder`` that runs the model only for texts it has not seen."""

    def __init__(self, inner: ContentEmbedder, cache: EmbeddingCache | None = None) -> None:
        self.inner = inner
        self.cache = cache or EmbeddingCache()
        self.hits = 0
        self.misses = 0
        self._identity: str | None = None

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def identity(self) -> str:
        """The inner model's identity; also the cache key, so another checkpoint misses."""
        from learn_core.embedding.identity import content_identity

        if self._identity is None:
            self._identity = content_identity(self.inner)
        return self._identity

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        hashes = [text_hash(t) for t in texts]
        found = self.cache.get_many(self.identity, hashes)
        todo: dict[str, str] = {}
        for h, t in zip(hashes, texts, strict=True):
            if h not in found and h not in todo:
                todo[h] = t
        if todo:
            vecs = self.inner.embed(list(todo.values()))
            fresh = dict(zip(todo.keys(), vecs, strict=True))
            self.cache.put_many(self.identity, fresh)
            found.update(fresh)
        self.misses += len(todo)
        self.hits += len(texts) - len(todo)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, h in enumerate(hashes):
            out[i] = found[h]
        return out
