"""Event-id claims: the first content fingerprint of every ``event_id``, kept for a while.

An interaction's ``event_id`` names one event (``learn_core.events``): the first record
stored under an id wins, an identical redelivery is a no-op and a reuse with other
content is dead-lettered. To tell them apart the interaction consumer claims every id
with its fingerprint before it writes, atomically across the consumers of a group, in
the backend of the user histories (``streaming.user_sinks``).

Claims are kept for at least ``keep_s`` seconds from the first claim
(``LEARNREC_INTERACTION_CONSUMER_EVENT_ID_RETENTION_DAYS``), then dropped, so the store
is bounded by the event rate times the retention instead of growing forever. Inside
that span the rule is exact: a claim younger than ``keep_s`` is never dropped. After it,
a reused id may count as a new event (its first claim is gone).

* SQLite: two generations of tables, each dropped whole once all its claims are older
  than ``keep_s``: a claim lives between ``keep_s`` and twice that.
* Redis: one key per id, ``SET NX PX``, so Redis expires it after exactly ``keep_s``.
  The unbounded hash of earlier versions (``<prefix>events``) is given the same
  retention at the first claim and still consulted until it expires (its claims were
  first).
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
    """Two generations of claims on the history store's connection: ``event_ids`` (the
    current one, started at ``event_ids_meta.started``) and ``event_ids_prev``.

    Deleting expired ids one by one cost more than the claims (random keys: about 20 µs
    an id, measured with ``bench.event_claims``); a generation is dropped whole instead.
    A generation older than ``keep_s`` becomes the previous one, replacing it, so every
    claim is kept between ``keep_s`` and twice that, and the store holds at most about
    two retentions of claims. A table of an earlier version is the current generation,
    started at the upgrade.
    """

    def __init__(self, conn: sqlite3.Connection, clock: Clock = time.time) -> None:
        self._conn = conn
        self.clock = clock
        for table in ("event_ids", "event_ids_prev"):
            conn.execute(_CREATE.format(table=table))
        conn.execute("CREATE TABLE IF NOT EXISTS event_ids_meta (started REAL NOT NULL)")
        if conn.execute("SELECT count(*) FROM event_ids_meta").fetchone()[0] == 0:
            conn.execute("INSERT INTO event_ids_meta VALUES (?)", (clock(),))
        conn.commit()

    def _rotate(self, now: float, keep_s: float) -> None:
        (started,) = self._conn.execute("SELECT started FROM event_ids_meta").fetchone()
        if now - started < keep_s:
            return
        # Every claim of the previous generation is older than ``started`` <= now - keep;
        # with no claim since ``started + keep`` (else it would have rotated then), the
        # current one's are as well once ``now - started >= 2 keep``.
        self._conn.execute("DROP TABLE event_ids_prev")
        if now - started >= 2 * keep_s:
            self._conn.execute("DELETE FROM event_ids")
            self._conn.execute(_CREATE.format(table="event_ids_prev"))
        else:
            self._conn.execute("ALTER TABLE event_ids RENAME TO event_ids_prev")
            self._conn.execute(_CREATE.format(table="event_ids"))
        self._conn.execute("UPDATE event_ids_meta SET started = ?", (now,))

    def _read(self, table: str, ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = ",".join("?" * len(chunk))
            out.update(
                self._conn.execute(
                    f"SELECT event_id, fingerprint FROM {table} WHERE event_id IN ({q})", chunk
                )
            )
        return out

    def claim(self, fingerprints: Mapping[str, str], keep_s: float) -> dict[str, str]:
        conn = self._conn
        # IMMEDIATE: the write lock before the first read, so that two processes on one
        # file never both rotate, nor fail to upgrade a read snapshot (WAL).
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._rotate(self.clock(), keep_s)
            out = self._read("event_ids_prev", list(fingerprints))  # claimed first
            new = [(e, fp) for e, fp in fingerprints.items() if e not in out]
            cur = conn.executemany(
                "INSERT OR IGNORE INTO event_ids(event_id, fingerprint) VALUES (?, ?)", new
            )
            if cur.rowcount == len(new):  # all new (the usual case): nothing to read back
                out.update(new)
            else:
                out.update(self._read("event_ids", [e for e, _ in new]))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return out

    def __len__(self) -> int:
        q = "SELECT (SELECT count(*) FROM event_ids) + (SELECT count(*) FROM event_ids_prev)"
        return self._conn.execute(q).fetchone()[0]


_CREATE = (
    "CREATE TABLE IF NOT EXISTS {table} (event_id TEXT PRIMARY KEY, "
    "fingerprint TEXT NOT NULL) WITHOUT ROWID"
)


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
