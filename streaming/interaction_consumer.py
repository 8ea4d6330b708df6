"""Interaction consumer: interactions -> user histories -> one user-tower pass -> Feast.

Per micro-batch (``InteractionHandler``):

1. merge the batch into the stored windows of its users (``learn_core.history``, pure);
2. look the windows' items up in the content store through an in-process LRU;
3. run the current user tower once over every user whose window changed and is fully
   resolved (held users whose late item has arrived included), and over held users who
   waited ``held_max_s``, without their missing items (``streaming.held_items``);
4. write the user embeddings online (model version, history length, event time), then
   append the interaction log and the user embeddings offline;
5. store the new windows and the held set in one transaction.

The loop commits the Kafka offsets only after all of that (``MicroBatchLoop``). A crash
anywhere re-delivers the batch; since windows are a set function of the events and the
writes are keyed by (user, event time) / event id, the replay writes the same values.

Model: the registry's current user tower, re-checked every ``reload_check_s`` at a
batch boundary; while a retrain switches versions, the pending one too, whose rows are
written first (``streaming.tower_versions``: dual write). With no model in the registry
the consumer runs a deterministic untrained *bootstrap* tower (seed 0, version
``bootstrap-<weights digest>``), so the pipeline is testable from an empty registry and
every vector still names its maker; readers that want trained embeddings refuse
``bootstrap-*`` versions.
"""

from __future__ import annotations

import argparse
import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from learn_core.events import INTERACTION, Interaction, event_fingerprint
from learn_core.history import BatchPlan, group_by_user, plan_batch
from learn_core.inference import embed_windows
from learn_core.serving import LoadedTower, ModelSource, RegistryTowers, as_tower
from learn_core.settings import ConfigError, load
from streaming.consumer import Accepted, LoopStats, MicroBatchLoop
from streaming.held_items import HoldDecision, HoldTimer
from streaming.high_water import Spans, Watch
from streaming.interaction_settings import InteractionConsumerSettings
from streaming.metrics import MetricsSettings, StreamMetrics
from streaming.store_repair import StoreRepair
from streaming.tower_versions import ServedTowers, window_problem
from streaming.user_rows import interaction_rows, partial_rows, user_rows
from streaming.user_sinks import ContentLookup, HistoryStore, UserFeatureSink
from streaming.validate import DUPLICATE_CONFLICT, Rejection

log = logging.getLogger(__name__)
MISSING_ITEM = (
    "item %r has no content after %gs: its users are embedded without it until it "
    "arrives (LEARNREC_INTERACTION_CONSUMER_HELD_MAX_S)"
)


# ---------------------------------------------------------------------------- handler


@dataclass
class HandlerStats:
    events: int = 0
    users_written: int = 0
    held_interactions: int = 0
    held_users: int = 0
    released_users: int = 0
    #: user embeddings written without a missing item (after ``held_max_s``)
    embedded_without: int = 0
    #: distinct items skipped so (each reported once at WARNING)
    missing_items: int = 0
    model_switches: int = 0
    #: produce-to-readable seconds of recent events whose embedding was written
    freshness_s: list[float] = field(default_factory=list)


class InteractionHandler:
    """The loop's handler; raises on any write failure so that the loop retries."""

    def __init__(
        self,
        towers: ModelSource,
        history: HistoryStore,
        content: ContentLookup,
        sink: UserFeatureSink,
        settings: InteractionConsumerSettings,
        metrics: StreamMetrics | None = None,
        owned_partitions: Callable[[], set[int] | None] = lambda: None,
        keep_freshness: int = 1_000_000,
    ) -> None:
        self.towers = towers
        self.history = history
        self.content = content
        self.sink = sink
        self.s = settings
        self.metrics = metrics or StreamMetrics()
        self.owned_partitions = owned_partitions
        self.keep_freshness = keep_freshness
        self.stats = HandlerStats()
        self.served = ServedTowers(towers, settings.history_len, settings.reload_check_s)
        # Two workers: the interaction-log and user-embedding appends (each an fsync, or
        # a PostgreSQL round trip) run side by side instead of one after the other.
        self._offline = ThreadPoolExecutor(2, thread_name_prefix="offline-append")
        self.last_call = -float("inf")
        self.holds = HoldTimer(settings.held_max_s, settings.held_max_users)
        # The store is a cache of the logs: its high-water marks are checked with every
        # batch and every ``store_check_s`` (``streaming.high_water``, ``store_repair``).
        self.repair = StoreRepair(settings.store_check_s)
        self._spans: Spans = {}

    def begin_batch(self, spans: Spans) -> None:
        """The offsets of the batch the loop hands over next (dead letters included)."""
        self._spans = spans

    @property
    def model(self) -> LoadedTower | None:
        """The current user tower (the serving version's)."""
        return self.served.current

    def reload_model(self, force: bool = False) -> None:
        """Follow the registry's current and pending versions (at batch boundaries)."""
        before = self.served.current
        if self.served.refresh(force):
            assert self.served.current is not None
            # The tower reads only vectors of the content model it was trained on; others
            # count as missing (the user is held), never as input of the wrong meaning.
            self.content.expect(self.served.current.content_model)
            if before is not None:
                self.stats.model_switches += 1

    def first_write_wins(
        self, accepted: list[Accepted]
    ) -> tuple[list[tuple[Interaction, Any]], list[tuple[Accepted, Rejection]]]:
        """The batch's interactions, less those whose event id was first stored with other
        content (returned with their reason, for the dead-letter topic)."""
        mine: list[tuple[Accepted, Interaction, str]] = []
        for a in accepted:
            if isinstance(a.event, Interaction):
                mine.append((a, a.event, event_fingerprint(a.event)))
        claims: dict[str, str] = {}
        for _, ev, fp in mine:
            claims.setdefault(ev.event_id, fp)  # within a batch, too, the first one wins
        keep_s = self.s.event_id_retention_days * 86_400
        stored = self.history.claim_events(claims, keep_s) if claims else {}
        keep: list[tuple[Interaction, Any]] = []
        refused: list[tuple[Accepted, Rejection]] = []
        for a, ev, fp in mine:
            if stored.get(ev.event_id, fp) == fp:
                keep.append((ev, a.source))  # new, or a redelivery of the same event
            else:
                why = f"event_id {ev.event_id[:80]!r} was first stored with other content"
                refused.append((a, Rejection(DUPLICATE_CONFLICT, why)))
        return keep, refused

    def __call__(self, accepted: list[Accepted]) -> list[tuple[Accepted, Rejection]]:
        self.last_call = time.monotonic()
        spans, self._spans = self._spans, {}
        self.reload_model()
        assert self.model is not None
        if self.repair.watch.due():
            self.repair.check(self, self.owned_partitions())
        h = self.s.history_len
        inter, refused = self.first_write_wins(accepted)
        batch = group_by_user((ev, src.partition) for ev, src in inter)
        old = self.history.get_many(batch)
        held_before = self.history.held(self.owned_partitions())
        if not inter and not held_before:
            if spans:  # only dead letters or refusals: the marks still follow the commits
                replaced = self.history.apply({}, [], Watch.stamps(spans))
                self.repair.after_batch(self, replaced, spans)
            return refused
        items = {e.item_id for rows in batch.values() for e, _ in rows}
        for hist in (*old.values(), *held_before.values()):
            items.update(hist.item_ids)
        content = self.content.get_many(items)
        plan = plan_batch(old, batch, held_before, content.__contains__, h)
        windows = {**held_before, **plan.histories}  # every held user's stored window
        holds = self.holds.decide(plan.held, windows)
        for user in holds.evict:  # off the re-check list; the stored window is kept
            plan.histories[user] = windows[user]
            del plan.held[user]

        # The offline appends (arrow, parquet, fsync: mostly outside the GIL) run on a
        # worker thread while this thread runs the tower and the online write; all
        # writes finish before the state transaction, as in the sequential order.
        now = pd.Timestamp(datetime.now(UTC))
        pending = [
            self._offline.submit(
                self.sink.append_interactions, interaction_rows([ev for ev, _ in inter], now)
            )
        ]
        towers = self.served.writing()  # a pending version first, then the current one
        try:
            frames = [self._user_frame(t, plan, holds, content, now) for t in towers]
            t0 = time.monotonic()
            # Offline, the serving version's rows only: a pending version's have the same
            # key (user, event time) and would collapse into them.
            pending.append(self._offline.submit(self.sink.append_users, frames[-1]))
            both = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            self.sink.write_users_online(both)
            readable = time.time()
        finally:
            for f in pending:
                f.exception()  # wait for both appends before anything else happens
        for f in pending:
            f.result()  # raise an append failure: the loop retries the batch
        # Asked again after the interaction log is durable: a retrain's catch-up that
        # missed these events reads the log later, so by then the versions it switches to
        # are known here (cached at most reload_check_s < its wait, docs/deploy.md).
        self.reload_model()
        done = {t.version for t in towers}
        late = [t for t in self.served.writing() if t.version not in done]
        late = [t for t in late if t.content_model == towers[-1].content_model]
        if late:
            self.sink.write_users_online(
                pd.concat([self._user_frame(t, plan, holds, content, now) for t in late])
            )
        replaced = self.history.apply(plan.histories, plan.held, Watch.stamps(spans))
        new_missing = self.holds.commit(holds)
        self.repair.after_batch(self, replaced, spans)
        write_s = time.monotonic() - t0

        ready = set(plan.ready)
        fresh = [
            readable - src.timestamp_ms / 1000
            for ev, src in inter
            if ev.user_id in ready and src.timestamp_ms
        ]
        st = self.stats
        st.events += len(inter)
        st.users_written += len(plan.ready) + len(holds.partial)
        st.embedded_without += len(holds.partial)
        st.missing_items += len(new_missing)
        for item in new_missing:  # once per item, not per event or user
            log.warning(MISSING_ITEM, item, self.s.held_max_s)
        released = sum(1 for u in held_before if u in ready)
        st.released_users += released
        st.held_users = len(plan.held)
        st.held_interactions = plan.held_interactions
        if len(st.freshness_s) < self.keep_freshness:
            st.freshness_s.extend(fresh)
        self.metrics.record_write(write_s, fresh)
        self.metrics.record_held(
            plan.held_interactions, released, len(holds.partial), len(new_missing)
        )
        return refused

    def _user_frame(
        self,
        tower: LoadedTower,
        plan: BatchPlan,
        holds: HoldDecision,
        content: dict[str, Any],
        now: pd.Timestamp,
    ) -> pd.DataFrame:
        """The batch's user rows under ``tower``'s version: ready users, then partial ones."""
        w = tower.window(self.s.history_len)  # the model's own window, as its backfill's
        items_of = [plan.histories[u].item_ids for u in plan.ready]
        items_of += [list(p.items) for p in holds.partial.values()]
        vecs = embed_windows(tower.tower, items_of, content, w)
        n = len(plan.ready)
        users = user_rows(plan, vecs[:n], tower.version, now, w)
        if holds.partial:
            part = partial_rows(holds.partial, vecs[n:], tower.version, now, w)
            users = pd.concat([users, part], ignore_index=True)
        return users


# ------------------------------------------------------------------------------ wiring


class InteractionLoop(MicroBatchLoop):
    """The micro-batch loop plus an idle trigger for held users.

    Held users are re-checked with every batch; on a quiet topic an empty handler call
    every ``held_recheck_s`` does the same, so a late item releases its users even when
    no new interaction arrives. Nothing is consumed, so nothing is committed.
    """

    def step(self, stop: threading.Event | None = None) -> int:
        n = super().step(stop)
        handler = self.handler
        if n == 0 and isinstance(handler, InteractionHandler):
            now = time.monotonic()
            if now - handler.last_call >= handler.s.held_recheck_s:
                self._with_retry(lambda: handler([]), stop)
        return n


def build_interaction_loop(
    bootstrap: str,
    sink: UserFeatureSink,
    history: HistoryStore,
    towers: ModelSource,
    *,
    settings: InteractionConsumerSettings | None = None,
    kafka: Any | None = None,
    metrics: StreamMetrics | None = None,
    **consumer_overrides: Any,
) -> tuple[MicroBatchLoop, InteractionHandler]:
    """Wire the interaction consumer: the one wiring of the CLI, the demo, the benches and tests.

    ``towers``: any ``ModelSource`` (``default_towers()``: the registry, else bootstrap).
    """
    import torch

    from streaming.kafka_io import (
        await_partitions,
        committed_offsets,
        consumer_lag,
        make_consumer,
        make_producer,
    )
    from streaming.settings import KafkaSettings
    from streaming.validate import limits_from_env

    s = settings or load(InteractionConsumerSettings)
    version = towers.current_version() or ""
    probe = as_tower(version, towers.load(version))
    if (problem := window_problem(probe, s.history_len)) is not None:
        raise ConfigError(problem)  # before any connection: a bad setting fails at start-up
    k = kafka or load(KafkaSettings)
    torch.set_num_threads(s.torch_threads)
    metrics = metrics or StreamMetrics(load(MetricsSettings))
    consumer = make_consumer(
        bootstrap,
        [k.interactions_topic],
        s.group_id,
        auto_offset_reset=s.auto_offset_reset,
        **consumer_overrides,
    )

    await_partitions(consumer, k.interactions_topic)

    dim = probe.user_tower.cfg.content_dim
    content = ContentLookup(sink.read_content, s.content_cache_entries, dim)
    handler = InteractionHandler(towers, history, content, sink, s, metrics)
    last_lag = [0.0]

    def on_batch(n_good: int, n_bad: int, seconds: float) -> None:
        metrics.record_batch(n_good, n_bad, seconds)
        now = time.monotonic()
        if metrics.enabled and now - last_lag[0] >= s.lag_every_s:
            last_lag[0] = now
            metrics.record_lag(consumer_lag(consumer))

    loop = InteractionLoop(
        consumer,
        make_producer(bootstrap),
        k.dlq_topic,
        handler,
        limits=limits_from_env(),
        expect=INTERACTION,
        settings=s,
        on_batch=on_batch,
    )

    def owned() -> set[int]:
        # The loop's snapshot as of its last poll: the handler may run on the loop's
        # write thread while the consumer polls (kafka-python is not thread-safe).
        return {tp.partition for tp in loop.assignment if tp.topic == k.interactions_topic}

    handler.owned_partitions = owned
    # Before any batch: the store's marks against the group's commits (streaming.store_repair).
    handler.reload_model(force=True)
    handler.repair.start(
        handler, k.interactions_topic, committed_offsets(consumer, k.interactions_topic)
    )
    # Every object alive now (torch, Feast, pandas, the model) lives as long as the
    # process; a batch keeps enough objects alive to start several full collections,
    # each of which would rescan all of them (measured: ~20% of the consumer's time).
    gc.freeze()
    return loop, handler


def default_towers() -> ModelSource:
    """The registry's current tower, else the deterministic bootstrap tower."""
    return RegistryTowers.open()


def run_interaction_consumer(
    stop: threading.Event | None = None, idle_exit_s: float | None = None
) -> LoopStats:
    """The long-running service: ``learnrec consume-interactions``."""
    from feature_repo.store import open_store
    from streaming.consumer import close_loop
    from streaming.kafka_io import prepare_kafka
    from streaming.user_sinks import FeastUserSink, open_history_store

    s = load(InteractionConsumerSettings)
    k, bootstrap = prepare_kafka()
    handle = open_store()
    history = open_history_store(handle)
    loop, handler = build_interaction_loop(
        bootstrap, FeastUserSink(handle), history, default_towers(), settings=s, kafka=k
    )
    log.info(
        "interaction consumer %s reading %s from %s", s.group_id, k.interactions_topic, bootstrap
    )
    try:
        return loop.run(stop, idle_exit_s=idle_exit_s)
    finally:
        close_loop(loop)
        history.close()
        handle.close()


def add_cli(sub: argparse._SubParsersAction) -> None:
    from streaming.service_cli import add_consumer_command

    add_consumer_command(
        sub,
        "consume-interactions",
        "run the interaction consumer (user histories -> user tower -> Feast)",
        run_interaction_consumer,
    )


__all__ = [
    "InteractionConsumerSettings",
    "InteractionHandler",
    "build_interaction_loop",
    "default_towers",
    "run_interaction_consumer",
]
