"""Event-id claims: the first content fingerprint of every ``event_id``, kept for a while.

An interaction's ``event_id`` names one event (``learn_core.events``): the first record
stored under an id wins, an identical redelivery is a no-op and a reuse with other
content is dead-lettered. To tell them apart the interaction consumer claims every id
with its fingerprint before it writes, atomically across the consumers of a group, in
the backend of the user histories (``streaming.user_sinks``).

Claims are kept for ``keep_s`` seconds from the first claim
(``LEARNREC_INTERACTION_CONSUMER_EVENT_ID_RETENTION_DAYS``), then dropped, so the store
is bounded by the event rate times the retention instead of growing forever. Inside
that span the rule is exact: a claim younger than ``keep_s`` is never dropped. After it,
a reused id counts as a new event (its first claim is gone).

* SQLite: rows carry ``claimed_at``; each claim deletes the expired rows first (an
  index on ``claimed_at``, a bounded number per call), in the claim's transaction.
* Redis: one key per id, ``SET NX PX``, so Redis expires them itself. The unbounded
  hash of earlier versions (``<prefix>events``) is given the same retention from the
  first claim on and still consulted until it expires (its claims were first).
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

#: Default retention of a claim: a reuse of an id within this span is refused.
DEFAULT_RETENTION_DAYS = 7.0  # as Kafka's default time retention of a topic
DEFAULT_RETENTION_S = DEFAULT_RETENTION_DAYS * 86_400
#: Rows one SQLite claim deletes at most beyond twice its own size: a backlog of expired
#: rows (a long pause) drains over a few batches, never in one long transaction.
PURGE_MIN = 10_000

Clock = Callable[[], float]


class MemoryEventClaims:
    """In-process claims for unit tests (not durable)."""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self._rows: OrderedDict[str, tuple[str, float]] = OrderedDict()  # in claim order

    def claim(self, fingerprints: Mapping[str, str], keep_s: float) -> dict[str, str]:
        now = self.clock()
        while self._rows:
            oldest = next(iter(self._rows.values()))
            if oldest[1] >= now - keep_s:
                break
            self._rows.popitem(last=False)
        for e, fp in fingerprints.items():
            self._rows.setdefault(e, (fp, now))
        return {e: self._rows[e][0] for e in fingerprints}

    def __len__(self) -> int:
        return len(self._rows)


class SqliteEventClaims:
    """An ``event_ids`` table on the history store's connection."""

    def __init__(self, conn: sqlite3.Connection, clock: Clock = time.time) -> None:
        self._conn = conn
        self.clock = clock
        conn.execute(
            "CREATE TABLE IF NOT EXISTS event_ids (event_id TEXT PRIMARY KEY, "
            "fingerprint TEXT NOT NULL, claimed_at REAL NOT NULL) WITHOUT ROWID"
        )
        columns = {row[1] for row in conn.execute("PRAGMA table_info(event_ids)")}
        if "claimed_at" not in columns:  # a table of an earlier version: its claims count
            conn.execute(  # from now, so none of them is dropped before the retention
                "ALTER TABLE event_ids ADD COLUMN claimed_at REAL NOT NULL "
                f"DEFAULT {float(clock())!r}"
            )
        conn.execute("CREATE INDEX IF NOT EXISTS event_ids_claimed_at ON event_ids(claimed_at)")
        conn.commit()

    def claim(self, fingerprints: Mapping[str, str], keep_s: float) -> dict[str, str]:
        ids = list(fingerprints)
        now = self.clock()
        out: dict[str, str] = {}
        with self._conn:  # one transaction: purge, insert and read see the same rows
            self._conn.execute(
                "DELETE FROM event_ids WHERE event_id IN (SELECT event_id FROM event_ids "
                "WHERE claimed_at < ? ORDER BY claimed_at LIMIT ?)",
                (now - keep_s, PURGE_MIN + 2 * len(ids)),
            )
            cur = self._conn.executemany(
                "INSERT OR IGNORE INTO event_ids(event_id, fingerprint, claimed_at) "
                "VALUES (?, ?, ?)",
                [(e, fp, now) for e, fp in fingerprints.items()],
            )
            if cur.rowcount == len(ids):
                return dict(fingerprints)  # all new (the usual case): nothing to read back
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                q = ",".join("?" * len(chunk))
                out.update(
                    self._conn.execute(
                        f"SELECT event_id, fingerprint FROM event_ids WHERE event_id IN ({q})",
                        chunk,
                    )
                )
        return out

    def __len__(self) -> int:
        return self._conn.execute("SELECT count(*) FROM event_ids").fetchone()[0]


class RedisEventClaims:
    """``<prefix>ev:<event_id>`` keys holding the fingerprint, each with its own expiry."""

    def __init__(self, r: Any, prefix: str) -> None:
        self.r = r
        self.prefix = prefix
        self.legacy = f"{prefix}events"
        #: monotonic time until which the legacy hash may still exist (None: not checked)
        self._legacy_until: float | None = None

    def _key(self, event_id: str) -> str:
        return f"{self.prefix}ev:{event_id}"

    def _legacy_alive(self, keep_ms: int) -> bool:
        """Bound an earlier version's hash by the retention, once; then ask it until it
        has expired."""
        now = time.monotonic()
        if self._legacy_until is None:
            ttl = self.r.pttl(self.legacy)
            if ttl == -1:  # no expiry yet: its claims are at least as old as now
                self.r.pexpire(self.legacy, keep_ms)
                ttl = keep_ms
            self._legacy_until = now + max(ttl, 0) / 1000
        return now < self._legacy_until

    def claim(self, fingerprints: Mapping[str, str], keep_s: float) -> dict[str, str]:
        if not fingerprints:
            return {}
        ids = list(fingerprints)
        keys = [self._key(e) for e in ids]
        keep_ms = max(1, round(keep_s * 1000))
        legacy = self._legacy_alive(keep_ms)
        pipe = self.r.pipeline(transaction=False)  # SET NX is atomic per id
        for key, fp in zip(keys, fingerprints.values(), strict=True):
            # The raw command: redis-py's set() checks its options per call, which
            # doubled the client's CPU per claim (measured); a Lua script would be
            # cheaper still but blocks Redis, and the ranking reads it, for a batch.
            pipe.execute_command("SET", key, fp, "NX", "PX", keep_ms)
        pipe.mget(keys)
        if legacy:
            pipe.hmget(self.legacy, ids)
        got = pipe.execute()
        stored = got[len(ids)]
        if legacy:  # a claim of the earlier version was first
            stored = [old or new for old, new in zip(got[-1], stored, strict=True)]
        return {e: v.decode() for e, v in zip(ids, stored, strict=True) if v is not None}

    def __len__(self) -> int:
        n = sum(1 for _ in self.r.scan_iter(match=f"{self.prefix}ev:*", count=1000))
        return n + int(self.r.hlen(self.legacy))
