"""Durable per-user windows, event-id claims and high-water marks of the interaction consumer.

Where the history lives, and why not in a Feast view: see ``streaming.user_sinks``. Each
batch's state change is one transaction (SQLite) or one MULTI/EXEC (Redis), written after
the features and before the Kafka commit, and it stamps the partitions' high-water marks
(``streaming.high_water``) in that same transaction, so the marks go back exactly when the
windows do.

Ports: ``HistoryStore`` (memory, SQLite, Redis); ``open_history_store`` picks the backend.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from feature_repo.store_status import state_prefix
from learn_core.history import UserHistory
from streaming.event_claims import (
    DEFAULT_RETENTION_S,
    MemoryEventClaims,
    RedisEventClaims,
    SqliteEventClaims,
)

if TYPE_CHECKING:
    from feature_repo.store import FeatureStoreHandle


class HistoryStore(Protocol):
    """Durable per-user windows plus the set of held users (by owning partition)."""

    def get_many(self, users: Iterable[str]) -> dict[str, UserHistory]:
        """Stored windows of ``users``; unknown users are absent."""
        ...

    def held(self, partitions: set[int] | None) -> dict[str, UserHistory]:
        """Held users whose latest event came from ``partitions`` (``None``: all)."""
        ...

    def apply(
        self,
        histories: Mapping[str, UserHistory],
        held: Iterable[str],
        marks: Mapping[int, int] | None = None,
    ) -> dict[int, int | None]:
        """Atomically store ``histories``; mark ``held`` users, clear the rest of them; set
        the partitions' high-water ``marks`` (``streaming.high_water``) and return the marks
        they replaced (None: none)."""
        ...

    def high_water(self, partitions: Iterable[int]) -> dict[int, int | None]:
        """The stored high-water mark of each partition (None: none)."""
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
        self.marks: dict[int, int] = {}
        self.events = MemoryEventClaims()

    def get_many(self, users: Iterable[str]) -> dict[str, UserHistory]:
        return {u: self.rows[u] for u in users if u in self.rows}

    def held(self, partitions: set[int] | None) -> dict[str, UserHistory]:
        return {
            u: self.rows[u]
            for u in self.held_users
            if partitions is None or self.rows[u].partition in partitions
        }

    def apply(
        self,
        histories: Mapping[str, UserHistory],
        held: Iterable[str],
        marks: Mapping[int, int] | None = None,
    ) -> dict[int, int | None]:
        held = set(held)
        self.rows.update(histories)
        self.held_users -= set(histories) - held
        self.held_users |= held
        replaced = self.high_water(marks or {})
        self.marks.update(marks or {})
        return replaced

    def high_water(self, partitions: Iterable[int]) -> dict[int, int | None]:
        return {p: self.marks.get(p) for p in partitions}

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
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS high_water "
            "(partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL)"
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

    def apply(
        self,
        histories: Mapping[str, UserHistory],
        held: Iterable[str],
        marks: Mapping[int, int] | None = None,
    ) -> dict[int, int | None]:
        held = set(held)
        marks = marks or {}
        with self._conn:
            replaced = self.high_water(marks)
            self._conn.executemany(
                "INSERT OR REPLACE INTO high_water(partition, next_offset) VALUES (?, ?)",
                list(marks.items()),
            )
            self._conn.executemany(
                "INSERT INTO user_history(user_id, partition, held, body) VALUES (?,?,?,?) "
                "ON CONFLICT(user_id) DO UPDATE SET partition=excluded.partition, "
                "held=excluded.held, body=excluded.body",
                [(u, h.partition, int(u in held), h.to_json()) for u, h in histories.items()],
            )
            rest = [(u,) for u in held if u not in histories]
            self._conn.executemany("UPDATE user_history SET held = 1 WHERE user_id = ?", rest)
        return replaced

    def high_water(self, partitions: Iterable[int]) -> dict[int, int | None]:
        out: dict[int, int | None] = dict.fromkeys(partitions)
        for p, off in self._conn.execute("SELECT partition, next_offset FROM high_water"):
            if p in out:
                out[p] = int(off)
        return out

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

    def apply(
        self,
        histories: Mapping[str, UserHistory],
        held: Iterable[str],
        marks: Mapping[int, int] | None = None,
    ) -> dict[int, int | None]:
        held = set(held)
        parts = list(marks or {})
        pipe = self.r.pipeline(transaction=True)
        if parts:  # read in the transaction, before the new marks: nothing in between
            pipe.hmget(f"{self.prefix}hwm", parts)
            pipe.hset(f"{self.prefix}hwm", mapping=dict(marks or {}))
        if histories:
            pipe.mset({self._key(u): h.to_json() for u, h in histories.items()})
        release = [u for u in histories if u not in held]
        if release:
            pipe.hdel(f"{self.prefix}held", *release)
        mark = {u: histories[u].partition for u in held if u in histories}
        if mark:
            pipe.hset(f"{self.prefix}held", mapping=mark)
        if not (parts or histories or held):
            return {}
        out = pipe.execute()
        return _marks(parts, out[0]) if parts else {}

    def high_water(self, partitions: Iterable[int]) -> dict[int, int | None]:
        parts = list(partitions)
        return _marks(parts, self.r.hmget(f"{self.prefix}hwm", parts)) if parts else {}

    def claim_events(
        self, fingerprints: Mapping[str, str], keep_s: float = DEFAULT_RETENTION_S
    ) -> dict[str, str]:
        return self.events.claim(fingerprints, keep_s)

    def close(self) -> None:
        self.r.close()


def _marks(parts: list[int], values: list[bytes | None]) -> dict[int, int | None]:
    return {p: None if v is None else int(v) for p, v in zip(parts, values, strict=True)}


def open_history_store(handle: FeatureStoreHandle) -> HistoryStore:
    """The history store in the same backend as ``handle``'s online store."""
    s = handle.settings
    if s.profile == "production":
        return RedisHistoryStore(s.redis_url, state_prefix(s))
    return SqliteHistoryStore(s.resolved_data_dir() / "user_history.sqlite")
