"""The interaction consumer's side of "the online store is a cache of the logs".

``StoreRepair`` is the adapter around the pure check (``streaming.high_water``): it reads
the store's high-water marks, and when a partition's mark went back it

1. marks the partition ``degraded`` in the shared status (``feature_repo.store_status``),
   so that the ranking reader stops serving its users and ``/healthz`` says why;
2. rebuilds the windows of the partition's users from the offline interaction log, the
   batch reference (``learn_core.history.windows_from_log``), and writes the users whose
   stored window differs: their embeddings online and offline, then their windows, with
   the partition's mark restored in the same transaction;
3. clears the mark.

It runs on the handler's thread, between batches, for partitions this consumer owns, so no
other writer touches those users meanwhile. The next batch merges into the rebuilt
windows. A rebuild that fails (the store is down again) raises: the loop retries the
batch, whose replaced marks are still too old, so the rebuild runs again; the partition
stays marked until one succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd

from feature_repo.store_status import Degraded, partition_of
from learn_core.history import UserHistory, plan_batch, windows_from_log
from streaming.held_items import HoldDecision
from streaming.high_water import Regression, Spans, Watch

if TYPE_CHECKING:
    from streaming.interaction_consumer import InteractionHandler

log = logging.getLogger(__name__)

#: users embedded and written per step of a rebuild (bounds its memory)
REBUILD_CHUNK = 1000


class StoreRepair:
    """Detects a store that went back (per partition) and rebuilds it from the offline log."""

    def __init__(
        self,
        check_every_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.watch = Watch(check_every_s, clock)
        self.wall = wall
        #: the interactions topic and its partition count (``configure``; 0: unknown, then
        #: a rebuild reads every user of the log)
        self.topic = "interactions"
        self.partitions = 0
        self.rebuilds = 0
        self.rebuilt_users = 0
        #: wall time the last regression was marked degraded (None: never)
        self.detected_at: float | None = None

    def configure(self, topic: str, partitions: int) -> None:
        self.topic, self.partitions = topic, partitions

    def after_batch(
        self, handler: InteractionHandler, replaced: Mapping[int, int | None], spans: Spans
    ) -> None:
        """The batch's transaction replaced ``replaced``: rebuild where it was too old."""
        found = self.watch.after_batch(replaced, spans)
        if found:
            self.repair(handler, found)

    def check(self, handler: InteractionHandler, owned: set[int] | None) -> None:
        """The periodic (and start-up) check of the owned partitions' marks."""
        parts = set(self.watch.floors) if owned is None else owned
        found = self.watch.check(handler.history.high_water(parts), parts)
        if found:
            self.repair(handler, found)
        else:  # a mark an old snapshot brought back, or a repair that another process began
            handler.sink.store_status().clear(f"{self.topic}/{p}" for p in parts)

    def start(self, handler: InteractionHandler, topic: str, committed: Mapping[int, int]) -> None:
        """At start-up, before the group assigns anything: every partition's mark against the
        group's committed offset (``committed`` holds them all). A partition a running replica
        owns may be rebuilt here while it writes; the rebuild's mark is then below that
        owner's, so its next batch finds it and rebuilds again, from a log that holds its
        writes: a race costs a second rebuild, not an event."""
        self.configure(topic, len(committed))
        self.watch.start(committed)
        self.check(handler, set(committed))

    def repair(self, handler: InteractionHandler, found: list[Regression]) -> None:
        status = handler.sink.store_status()
        now = self.wall()
        status.mark(
            Degraded(self.topic, r.partition, self.partitions, r.reason(self.topic), now)
            for r in found
        )
        self.detected_at = self.wall()  # the marks are visible from here on
        for r in found:
            log.error("%s; rebuilding its users from the offline log", r.reason(self.topic))
        parts = {r.partition for r in found}
        windows = self.rebuilt_windows(handler, parts)
        stored = handler.history.get_many(windows)
        changed = {
            u: w for u, w in windows.items() if u not in stored or stored[u].entries != w.entries
        }
        changed.update(
            self.stale_rows(handler, {u: w for u, w in windows.items() if u not in changed})
        )
        marks = {p: self.watch.floors.get(p, 0) for p in parts}
        users = sorted(changed)
        for i in range(0, max(len(users), 1), REBUILD_CHUNK):
            chunk = {u: changed[u] for u in users[i : i + REBUILD_CHUNK]}
            last = i + REBUILD_CHUNK >= len(users)
            write_windows(handler, chunk, marks if last else None)
        self.watch.repaired(parts, marks)
        status.clear(f"{self.topic}/{p}" for p in parts)
        self.rebuilds += 1
        self.rebuilt_users += len(changed)
        handler.metrics.record_rebuild(len(parts), len(changed))
        log.warning(
            "rebuilt %d users of %s partitions %s from the offline log in %.1fs (%d checked)",
            len(changed), self.topic, sorted(parts), self.wall() - now, len(windows),
        )  # fmt: skip

    def stale_rows(
        self, handler: InteractionHandler, windows: Mapping[str, UserHistory]
    ) -> dict[str, UserHistory]:
        """Users whose window is right but whose row of the serving version is missing or
        older than its newest event (a backfill written after the snapshot, say)."""
        model = handler.model
        if model is None or not windows:
            return {}
        users = sorted(windows)
        out: dict[str, UserHistory] = {}
        for i in range(0, len(users), REBUILD_CHUNK):
            times = handler.sink.user_times(users[i : i + REBUILD_CHUNK], model.version)
            for u, t in times.items():
                if t is None or t < windows[u].latest_ms:
                    out[u] = windows[u]
        return out

    def rebuilt_windows(
        self, handler: InteractionHandler, parts: set[int]
    ) -> dict[str, UserHistory]:
        """The windows of the users of ``parts``, from the offline log (the batch reference)."""
        logged = handler.sink.read_interactions()
        if logged.empty:
            return {}
        if self.partitions:
            users = pd.unique(logged["user_id"].astype(str))
            mine = {u for u in users if partition_of(u, self.partitions) in parts}
            logged = logged[logged["user_id"].astype(str).isin(mine)]
        wins = windows_from_log(logged, handler.s.history_len)
        return {
            u: UserHistory(w.entries, partition_of(u, self.partitions) if self.partitions else -1)
            for u, w in wins.items()
        }


def write_windows(
    handler: InteractionHandler,
    windows: Mapping[str, UserHistory],
    marks: Mapping[int, int] | None,
) -> None:
    """Store rebuilt ``windows`` as a batch would: embed the users whose items all have
    content (the others are held, as the stream holds them), write their rows online and
    offline, then the windows and ``marks`` in one transaction."""
    handler.reload_model()
    h = handler.s.history_len
    batch = {u: [(e, w.partition) for e in w.entries] for u, w in windows.items()}
    items = {i for w in windows.values() for i in w.item_ids}
    content = handler.content.get_many(items)
    plan = plan_batch({}, batch, {}, content.__contains__, h)
    if plan.ready:
        now = pd.Timestamp(datetime.now(UTC))
        # As a batch writes: a pending version's rows too (blue/green dual write), offline
        # the serving version's only.
        towers = handler.served.writing()
        frames = [handler._user_frame(t, plan, HoldDecision(), content, now) for t in towers]
        handler.sink.append_users(frames[-1])
        handler.sink.write_users_online(pd.concat(frames, ignore_index=True))
    handler.history.apply(plan.histories, plan.held, marks)
