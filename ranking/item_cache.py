"""A near-cache of the serving version's item vectors for ``/rank``.

Why: reading 100 candidate rows from Redis was 70 % of the reader's CPU per request
(about 420 µs of client-side packing, ``recv`` and decoding, plus the Lua script's time
in Redis), while a candidate's vector of one model version changes only when the item's
text does. The user row, which changes with every interaction, is still read from the
store on every request.

Rules (docs/ranking.md, "Item near-cache"):

* only rows the store returned as ``ok`` for the version are kept, so a miss, an
  unknown or a stale id is read from the store on every request: a new item is
  rankable the moment its row is written, and a response still never mixes versions;
* an entry is used for at most ``max_age_s`` after the read that fetched it started, so
  an item whose vector is rewritten under the same version is served at most that old;
  each id's limit lies between half and all of it (a hash of the id), so that entries
  read together do not all expire together: a request that met a wave of expired
  candidates would read them all, in the thread pool, and wait behind the others;
* one version at a time: the first request of another version drops the rest;
* at most ``max_entries`` ids, the oldest read dropped first.

Each entry also keeps its vector's JSON (an ``orjson.Fragment``), written the first time
a JSON answer needs it: later JSON ``/rank`` answers copy those bytes instead of formatting
64 floats per candidate again (docs/ranking.md, "JSON digits and the cached item JSON").
Written lazily, so a reader whose answers never become JSON (the Python client, the
compact answer) never pays for it.

Lookups take no lock (one ``dict.get`` each, atomic under the GIL); inserts and the
version switch take one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import orjson


def vector_json(vec: np.ndarray) -> orjson.Fragment:
    """``vec``'s JSON as ``RankResult.to_json`` writes it (shortest float32 decimals)."""
    vec = np.ascontiguousarray(vec, np.float32)
    return orjson.Fragment(orjson.dumps(vec, option=orjson.OPT_SERIALIZE_NUMPY))


class Row:
    """One cached item: when it was read (less its share of the spread), its vector, and
    its vector's JSON once an answer has asked for it."""

    __slots__ = ("_json", "read_at", "vector")

    def __init__(self, read_at: float, vector: np.ndarray) -> None:
        self.read_at, self.vector = read_at, vector
        self._json: orjson.Fragment | None = None

    def json(self) -> orjson.Fragment:
        """The vector's JSON, written on first use. Threads racing here write the same
        bytes, and the attribute's store is atomic, so no lock is needed."""
        if self._json is None:
            self._json = vector_json(self.vector)
        return self._json


class Hits(NamedTuple):
    """What ``ItemCache.lookup`` found: positions and their rows; positions to read."""

    rows: list[int]
    entries: list[Row]
    miss: list[int]


class ItemCache:
    """Item vectors of one model version, each with the monotonic time of its read."""

    def __init__(self, max_age_s: float, max_entries: int) -> None:
        if max_age_s < 0 or max_entries < 1:
            raise ValueError(f"max_age_s={max_age_s} must be >= 0, max_entries={max_entries} >= 1")
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._lock = threading.Lock()
        # (version, rows) swapped as one reference, so a lookup never pairs a version
        # with another version's rows.
        self._state: tuple[str | None, dict[str, Row]] = (None, {})
        #: Candidates served from the cache / read from the store (approximate under
        #: threads: for the health check, not for accounting).
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0

    def __len__(self) -> int:
        return len(self._state[1])

    def stats(self) -> dict[str, float | int]:
        seen = self.hits + self.misses
        return {
            "entries": len(self),
            "max_age_s": self.max_age_s,
            "hit_rate": round(self.hits / seen, 4) if seen else 0.0,
        }

    def lookup(self, version: str, ids: Sequence[str], now: float | None = None) -> Hits:
        """What the cache holds of ``ids`` under ``version``, and which positions to read."""
        cached, rows = self._state
        if not self.enabled or cached != version:
            self.misses += len(ids)
            return Hits([], [], list(range(len(ids))))
        oldest = (time.monotonic() if now is None else now) - self.max_age_s
        out = Hits([], [], [])
        for r, iid in enumerate(ids):
            got = rows.get(iid)
            if _usable(got, oldest):
                out.rows.append(r)
                out.entries.append(got)
            else:
                out.miss.append(r)
        self.hits += len(out.rows)
        self.misses += len(out.miss)
        return out

    def misses_at_most(self, ids: Sequence[str], limit: int, now: float | None = None) -> bool:
        """Whether at most ``limit`` ids lack a usable entry (of whichever version is cached)."""
        version, rows = self._state
        if not self.enabled or version is None:
            return len(ids) <= limit
        oldest = (time.monotonic() if now is None else now) - self.max_age_s
        missing = 0
        for iid in ids:
            if not _usable(rows.get(iid), oldest):
                missing += 1
                if missing > limit:
                    return False
        return True

    def store(
        self, version: str, ids: Sequence[str], vectors: np.ndarray, read_at: float
    ) -> list[Row]:
        """Keep ``vectors`` (rows ``ok`` in the store) of ``version``, read at ``read_at``;
        returns their rows (empty when the cache is off)."""
        if not self.enabled or not len(ids):
            return []
        block = np.array(vectors, dtype=np.float32)  # a copy: callers own what they passed
        spread = self.max_age_s / 2 / 1024
        # Entries read together expire apart (between max_age_s / 2 and max_age_s after
        # their read), so no later request meets a whole batch expired.
        made = [
            Row(read_at - spread * (hash(iid) & 1023), vec)
            for iid, vec in zip(ids, block, strict=True)
        ]
        with self._lock:
            if self._state[0] != version:
                self._state = (version, {})
            rows = self._state[1]
            for iid, row in zip(ids, made, strict=True):
                rows.pop(iid, None)  # re-inserted last: the dict's order is the read order
                rows[iid] = row
            while len(rows) > self.max_entries:
                del rows[next(iter(rows))]
        return made


def _usable(entry: Row | None, oldest: float) -> bool:
    """An entry read after ``oldest`` (its age limit already applied at ``store``)."""
    return entry is not None and entry.read_at > oldest
