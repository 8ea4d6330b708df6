"""Whether the online store may serve: the consumers' ``degraded`` marks, read by the reader.

The logs are the truth and the online store is a cache of them. When a consumer finds that
the store went back (Redis restarted from an older snapshot, a failover to a lagging
replica: ``streaming.high_water``), it marks the affected partitions here *before* it
rebuilds their users from the offline log, and clears the marks when it is done. The
ranking reader reads the marks: a user of a marked partition is not served (503,
``degraded``), and ``/healthz`` says ``degraded`` with the reason, instead of a 200 over
state the system knows to be stale.

The marks live in the online store's own backend (a hash in the same Redis, a SQLite file
beside ``online.db``), so every consumer and reader replica sees the same ones. A mark
that an old snapshot brings back is cleared by the partition's owner at its next check.

Ports: ``StoreStatus`` (memory, SQLite, Redis); ``open_store_status`` picks the backend.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from feature_repo.settings import FeastSettings


def state_prefix(settings: FeastSettings) -> str:
    """The Redis key prefix of the consumers' own state (windows, claims, marks)."""
    return f"learnrec:{settings.project}:"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's ``Utils.murmur2``, seed 0x9747B28C) as kafka-python
    gives it: unsigned 32 bits. Here, not imported from a Kafka client: the reader has none."""
    m, r = 0x5BD1E995, 24
    n = len(data)
    h = (0x9747B28C ^ n) & 0xFFFFFFFF
    for i in range(0, n - n % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[n - n % 4 :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record keyed ``key`` (murmur2, as
    the Java client and kafka-python do): where a user's interactions land."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Degraded:
    """One partition whose users' online state is known to be behind the logs."""

    topic: str
    partition: int
    #: the topic's partition count, so that a reader can place a user (``affects``)
    partitions: int
    reason: str
    #: when the mark was set (epoch seconds)
    since: float

    @property
    def scope(self) -> str:
        return f"{self.topic}/{self.partition}"

    def affects(self, user_id: str) -> bool:
        return partition_of(user_id, self.partitions) == self.partition

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["since"] = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
        return d

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Degraded:
        o = json.loads(text)
        return cls(str(o["topic"]), int(o["partition"]), int(o["partitions"]),
                   str(o["reason"]), float(o["since"]))  # fmt: skip


def summary(marks: Iterable[Degraded]) -> str:
    """One line for an answer's ``detail``: how many partitions, and the first reason."""
    marks = sorted(marks, key=lambda d: (d.topic, d.partition))
    if not marks:
        return "ok"
    parts = ", ".join(str(d.partition) for d in marks)
    which = f"partition {parts} is" if len(marks) == 1 else f"partitions {parts} are"
    return f"degraded: {which} being rebuilt from the offline log ({marks[0].reason})"


class StoreStatus(Protocol):
    """The shared ``degraded`` marks (one per topic partition)."""

    def degraded(self) -> list[Degraded]: ...

    def mark(self, marks: Iterable[Degraded]) -> None: ...

    def clear(self, scopes: Iterable[str]) -> None:
        """Remove the marks of ``scopes`` (``topic/partition``); absent ones are ignored."""
        ...

    def close(self) -> None: ...


class MemoryStoreStatus:
    """In-process implementation for unit tests."""

    def __init__(self) -> None:
        self.marks: dict[str, Degraded] = {}
        self._lock = threading.Lock()

    def degraded(self) -> list[Degraded]:
        with self._lock:
            return list(self.marks.values())

    def mark(self, marks: Iterable[Degraded]) -> None:
        with self._lock:
            self.marks.update((d.scope, d) for d in marks)

    def clear(self, scopes: Iterable[str]) -> None:
        with self._lock:
            for s in scopes:
                self.marks.pop(s, None)

    def close(self) -> None:
        pass


class RedisStoreStatus:
    """Production profile: the hash ``<prefix>degraded`` (scope -> JSON) in the online Redis."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.r = redis.Redis.from_url(url)
        self.key = f"{prefix}degraded"

    def degraded(self) -> list[Degraded]:
        return [Degraded.from_json(v) for v in self.r.hvals(self.key)]

    def mark(self, marks: Iterable[Degraded]) -> None:
        mapping = {d.scope: d.to_json() for d in marks}
        if mapping:
            self.r.hset(self.key, mapping=mapping)

    def clear(self, scopes: Iterable[str]) -> None:
        scopes = list(scopes)
        if scopes:
            self.r.hdel(self.key, *scopes)

    def close(self) -> None:
        self.r.close()


class SqliteStoreStatus:
    """Embedded profile: a ``degraded`` table in ``store_status.sqlite`` beside ``online.db``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS degraded (scope TEXT PRIMARY KEY, body TEXT NOT NULL)"
        )
        self._conn.commit()
        self._lock = threading.Lock()

    def degraded(self) -> list[Degraded]:
        with self._lock:
            rows = self._conn.execute("SELECT body FROM degraded").fetchall()
        return [Degraded.from_json(b) for (b,) in rows]

    def mark(self, marks: Iterable[Degraded]) -> None:
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO degraded(scope, body) VALUES (?, ?)",
                [(d.scope, d.to_json()) for d in marks],
            )

    def clear(self, scopes: Iterable[str]) -> None:
        with self._lock, self._conn:
            self._conn.executemany("DELETE FROM degraded WHERE scope = ?", [(s,) for s in scopes])

    def close(self) -> None:
        self._conn.close()


def open_store_status(settings: FeastSettings) -> StoreStatus:
    """The marks in the same backend as the online store of ``settings``."""
    if settings.profile == "production":
        return RedisStoreStatus(settings.redis_url, state_prefix(settings))
    return SqliteStoreStatus(settings.resolved_data_dir() / "store_status.sqlite")
