"""Adapters of the interaction consumer: durable history state, content lookup, user sink.

Where the history lives, and why not in a Feast view: the window is consumer-private
operational state (read-modify-write once per batch, never served), and a Feast view
would put it through the registry, protobuf value conversion and Feast's timestamp
rules, one row at a time. So it is a small Feast-independent key space in the *same
backend* as the online store: a table in a SQLite file next to ``online.db``
(embedded profile) or keys under a prefix in the same Redis (production profile). Each
batch's state change is one transaction (SQLite) or one MULTI/EXEC (Redis), written
after the features and before the Kafka commit.

The same backend also keeps the first content fingerprint of every event id
(``claim_events``, ``streaming.event_claims``): first write wins, atomically across the
consumers of a group, so a reused id with other content is refused everywhere
(``learn_core.events``). Claims expire after a retention (7 days by default), so this
grows with the event rate, not forever.

Ports: ``HistoryStore`` (memory, SQLite, Redis), ``UserFeatureSink`` (memory, Feast).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from feature_repo.schema import INTERACTION_LOG, ITEM_CONTENT, USER_TOWER
from learn_core.history import UserHistory
from streaming.event_claims import (
    DEFAULT_RETENTION_S,
    MemoryEventClaims,
    RedisEventClaims,
    SqliteEventClaims,
)

if TYPE_CHECKING:
    from feature_repo.store import FeatureStoreHandle

log = logging.getLogger(__name__)

USER_VIEW = USER_TOWER.name
CONTENT_VIEW = ITEM_CONTENT.name


# ----------------------------------------------------------------------------- history


class HistoryStore(Protocol):
    """Durable per-user windows plus the set of held users (by owning partition)."""

    def get_many(self, users: Iterable[str]) -> dict[str, UserHistory]:
        """Stored windows of ``users``; unknown users are absent."""
        ...

    def held(self, partitions: set[int] | None) -> dict[str, UserHistory]:
        """Held users whose latest event came from ``partitions`` (``None``: all)."""
        ...

    def apply(self, histories: Mapping[str, UserHistory], held: Iterable[str]) -> None:
        """Atomically store ``histories``; mark ``held`` users, clear the rest of them."""
        ...

    def claim_events(
        self, fingerprints: Mapping[str, str], keep_s: float = DEFAULT_RETENTION_S
    ) -> dict[str, str]:
        """Durably store each event id's fingerprint unless the id has one younger than
        ``keep_s``; return the stored fingerprint of every given id (first write wins,
        atomically per id; older claims are dropped)."""
        ...

    def close(self) -> None: ...


class MemoryHistoryStore:
    """In-process implementation for unit tests (not durable)."""

    def __init__(self) -> None:
        self.rows: dict[str, UserHistory] = {}
        self.held_users: set[str] = set()
        self.events = MemoryEventClaims()

    def get_many(self, users: Iterable[str]) -> dict[str, UserHistory]:
        return {u: self.rows[u] for u in users if u in self.rows}

    def held(self, partitions: set[int] | None) -> dict[str, UserHistory]:
        return {
            u: self.rows[u]
            for u in self.held_users
            if partitions is None or self.rows[u].partition in partitions
        }

    def apply(self, histories: Mapping[str, UserHistory], held: Iterable[str]) -> None:
        held = set(held)
        self.rows.update(histories)
        self.held_users -= set(histories) - held
        self.held_users |= held

    def claim_events(
        self, fingerprints: Mapping[str, str], keep_s: float = DEFAULT_RETENTION_S
    ) -> dict[str, str]:
        return self.events.claim(fingerprints, keep_s)

    def close(self) -> None:
        pass


class SqliteHistoryStore:
    """Embedded profile: a ``user_history`` table in a SQLite file beside the online store.

    WAL journal with ``synchronous=FULL``: a batch's transaction is on disk before the
    consumer commits its offsets, so neither a process crash nor an OS crash loses state
    that Kafka will not re-deliver (one fsync per batch, not per user).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS user_history (user_id TEXT PRIMARY KEY, "
            "partition INTEGER NOT NULL, held INTEGER NOT NULL, body TEXT NOT NULL)"
        )
        self._conn.execute(
            "CREATE INDEX IF NOT EXISTS user_history_held ON user_history(held, partition)"
        )
        self._conn.commit()
        self.events = SqliteEventClaims(self._conn)

    def get_many(self, users: Iterable[str]) -> dict[str, UserHistory]:
        users = list(users)
        out: dict[str, UserHistory] = {}
        for i in range(0, len(users), 500):
            chunk = users[i : i + 500]
            q = ",".join("?" * len(chunk))
            for u, body in self._conn.execute(
                f"SELECT user_id, body FROM user_history WHERE user_id IN ({q})", chunk
            ):
                out[u] = UserHistory.from_json(body)
        return out

    def held(self, partitions: set[int] | None) -> dict[str, UserHistory]:
        rows = self._conn.execute(
            "SELECT user_id, partition, body FROM user_history WHERE held = 1"
        ).fetchall()
        return {
            u: UserHistory.from_json(b) for u, p, b in rows if partitions is None or p in partitions
        }

    def apply(self, histories: Mapping[str, UserHistory], held: Iterable[str]) -> None:
        held = set(held)
        with self._conn:
            self._conn.executemany(
                "INSERT INTO user_history(user_id, partition, held, body) VALUES (?,?,?,?) "
                "ON CONFLICT(user_id) DO UPDATE SET partition=excluded.partition, "
                "held=excluded.held, body=excluded.body",
                [(u, h.partition, int(u in held), h.to_json()) for u, h in histories.items()],
            )
            rest = [(u,) for u in held if u not in histories]
            self._conn.executemany("UPDATE user_history SET held = 1 WHERE user_id = ?", rest)

    def claim_events(
        self, fingerprints: Mapping[str, str], keep_s: float = DEFAULT_RETENTION_S
    ) -> dict[str, str]:
        return self.events.claim(fingerprints, keep_s)

    def close(self) -> None:
        self._conn.close()


class RedisHistoryStore:
    """Production profile: ``<prefix>h:<user>`` strings and a ``<prefix>held`` hash (user -> partition)."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.r = redis.Redis.from_url(url)
        self.prefix = prefix
        self.events = RedisEventClaims(self.r, prefix)

    def _key(self, user: str) -> str:
        return f"{self.prefix}h:{user}"

    def get_many(self, users: Iterable[str]) -> dict[str, UserHistory]:
        users = list(users)
        if not users:
            return {}
        vals = self.r.mget([self._key(u) for u in users])
        return {u: UserHistory.from_json(v) for u, v in zip(users, vals, strict=True) if v}

    def held(self, partitions: set[int] | None) -> dict[str, UserHistory]:
        held = {k.decode(): int(v) for k, v in self.r.hgetall(f"{self.prefix}held").items()}
        users = [u for u, p in held.items() if partitions is None or p in partitions]
        return self.get_many(users)

    def apply(self, histories: Mapping[str, UserHistory], held: Iterable[str]) -> None:
        held = set(held)
        pipe = self.r.pipeline(transaction=True)
        if histories:
            pipe.mset({self._key(u): h.to_json() for u, h in histories.items()})
        release = [u for u in histories if u not in held]
        if release:
            pipe.hdel(f"{self.prefix}held", *release)
        mark = {u: histories[u].partition for u in held if u in histories}
        if mark:
            pipe.hset(f"{self.prefix}held", mapping=mark)
        pipe.execute()

    def claim_events(
        self, fingerprints: Mapping[str, str], keep_s: float = DEFAULT_RETENTION_S
    ) -> dict[str, str]:
        return self.events.claim(fingerprints, keep_s)

    def close(self) -> None:
        self.r.close()


# ----------------------------------------------------------------------------- content


class ContentLookup:
    """An in-process LRU over a content-embedding reader.

    Only hits are cached: a missing item must be asked for again, because its
    embedding may land at any moment (that is what releases held users). An item whose
    vector has the wrong width, or (once ``expect`` names the tower's content model)
    another content identity, counts as missing: the tower must not read it.
    """

    def __init__(
        self,
        fetch: Callable[..., dict[str, np.ndarray]],
        max_entries: int,
        dim: int,
    ) -> None:
        self.fetch = fetch
        self.max_entries = max_entries
        self.dim = dim
        self.content_model: str | None = None
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def expect(self, content_model: str | None) -> None:
        """Serve only vectors of ``content_model`` from now on (``None``: any)."""
        with self._lock:
            if content_model != self.content_model:
                self.content_model = content_model
                self._lru.clear()

    def get_many(self, item_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors of the ids that have content; absent ids have none yet."""
        out: dict[str, np.ndarray] = {}
        want: list[str] = []
        with self._lock:
            for i in dict.fromkeys(item_ids):
                v = self._lru.get(i)
                if v is None:
                    want.append(i)
                else:
                    self._lru.move_to_end(i)
                    out[i] = v
            self.hits += len(out)
            self.misses += len(want)
        if want:
            fetched = (
                self.fetch(want)
                if self.content_model is None
                else self.fetch(want, self.content_model)
            )
            got = {k: v for k, v in fetched.items() if v.shape == (self.dim,)}
            out.update(got)
            with self._lock:
                for k, v in got.items():
                    self._lru[k] = v
                while len(self._lru) > self.max_entries:
                    self._lru.popitem(last=False)
        return out


# -------------------------------------------------------------------------------- sink


class UserFeatureSink(Protocol):
    """Where the consumer reads content and writes user features."""

    def read_content(
        self, item_ids: list[str], content_model: str | None = None
    ) -> dict[str, np.ndarray]:
        """Content vectors of the ids found (only those of ``content_model`` when given)."""
        ...

    def write_users_online(self, rows: pd.DataFrame) -> None: ...

    def append_interactions(self, rows: pd.DataFrame) -> None:
        """Durably append raw interactions to the offline log (idempotent by key)."""
        ...

    def append_users(self, rows: pd.DataFrame) -> None:
        """Durably append user embeddings to the offline log (idempotent by key)."""
        ...


class MemoryUserSink:
    """In-process sink for unit tests: dicts of content, online rows and offline logs."""

    def __init__(
        self,
        content: Mapping[str, np.ndarray] | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> None:
        self.content: dict[str, np.ndarray] = dict(content or {})
        #: item -> content identity of its vector (absent: any model may read it)
        self.versions: dict[str, str] = dict(versions or {})
        self.online: dict[str, dict] = {}
        self.offline_users: list[pd.DataFrame] = []
        self.offline_interactions: list[pd.DataFrame] = []
        self.fail_writes = False

    def read_content(
        self, item_ids: list[str], content_model: str | None = None
    ) -> dict[str, np.ndarray]:
        return {
            i: self.content[i]
            for i in item_ids
            if i in self.content
            and (content_model is None or self.versions.get(i, content_model) == content_model)
        }

    def write_users_online(self, rows: pd.DataFrame) -> None:
        if self.fail_writes:
            raise ConnectionError("online store unavailable (test)")
        for r in rows.to_dict("records"):
            self.online[r["user_id"]] = r

    def append_interactions(self, rows: pd.DataFrame) -> None:
        self.offline_interactions.append(rows)

    def append_users(self, rows: pd.DataFrame) -> None:
        self.offline_users.append(rows)


class FeastUserSink:
    """Feast adapter: content via the fast online reader, user rows online and offline."""

    def __init__(self, handle: FeatureStoreHandle) -> None:
        self.handle = handle

    def read_content(
        self, item_ids: list[str], content_model: str | None = None
    ) -> dict[str, np.ndarray]:
        rows = self.handle.read_embeddings(CONTENT_VIEW, item_ids)
        return {
            i: rows.vectors[r].copy()
            for r, i in enumerate(rows.ids)
            if rows.found[r] and (content_model is None or rows.model_version[r] == content_model)
        }

    def write_users_online(self, rows: pd.DataFrame) -> None:
        self.handle.write_online(USER_VIEW, rows)

    def append_interactions(self, rows: pd.DataFrame) -> None:
        if len(rows):
            self.handle.append_offline(INTERACTION_LOG.name, rows)

    def append_users(self, rows: pd.DataFrame) -> None:
        if len(rows):
            self.handle.append_offline(USER_VIEW, rows)


def open_history_store(handle: FeatureStoreHandle) -> HistoryStore:
    """The history store in the same backend as ``handle``'s online store."""
    s = handle.settings
    if s.profile == "production":
        return RedisHistoryStore(s.redis_url, f"learnrec:{s.project}:")
    return SqliteHistoryStore(s.resolved_data_dir() / "user_history.sqlite")
