"""The micro-batch consumer loop shared by the item and interaction consumers.

One cycle: poll -> decode (pure) -> dead-letter the bad records -> hand the good
ones to the handler (features written) -> commit offsets. Offsets are committed
only after both the dead letters and the features are durably written, so a
crash anywhere re-delivers the batch (at-least-once; the writes are idempotent).
A handler failure is retried with back-off, never skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streaming.batch import (  # noqa: F401  (re-exported: the loop's public names)
    Accepted,
    Handler,
    LoopStats,
    next_offsets,
    polled_offsets,
    split_records,
)
from streaming.dead_letter import DeadLetter, make_dead_letter
from streaming.high_water import Spans, record_spans
from streaming.validate import Limits

log = logging.getLogger(__name__)


class ConsumerSettings(BaseSettings):
    """Micro-batch loop settings; subclasses set the env prefix and the group."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_CONSUMER_", extra="forbid", allow_inf_nan=False
    )

    group_id: str = Field("learn-consumer", min_length=1, description="Kafka consumer group")
    max_batch: int = Field(500, ge=1, le=100_000, description="records per micro-batch")
    poll_timeout_ms: int = Field(100, ge=1, le=60_000, description="longest wait for a batch")
    retry_backoff_s: float = Field(
        0.5, gt=0, le=3600, description="first back-off after a failed write"
    )
    retry_max_backoff_s: float = Field(
        10.0, gt=0, le=3600, description="back-off cap (doubles per failure)"
    )
    log_every_s: float = Field(10.0, gt=0, le=86_400, description="period of the progress log line")
    auto_offset_reset: str = Field(
        "earliest", pattern="^(earliest|latest)$", description="where a new group starts"
    )
    commit_retry_s: float = Field(
        60.0, gt=0, le=86_400, description="how long a failing offset commit is retried"
    )
    pipeline: bool = Field(
        False,
        description="poll the next batch while the handler writes this one (commit after write)",
    )
    gather_poll_ms: int = Field(
        5,
        ge=1,
        le=1_000,
        description="pipelined: poll timeout while a batch is being written (bounds how late "
        "the next batch starts after the write ends)",
    )


class MicroBatchLoop:
    """Drives a kafka-python consumer with at-least-once, commit-after-write semantics."""

    def __init__(
        self,
        consumer: Any,
        dlq_producer: Any,
        dlq_topic: str,
        handler: Handler,
        *,
        limits: Limits,
        expect: str | None,
        settings: ConsumerSettings,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.dlq = dlq_producer
        self.dlq_topic = dlq_topic
        self.handler = handler
        self.limits = limits
        self.expect = expect
        self.s = settings
        self.on_batch = on_batch
        self.stats = LoopStats()
        self._last_log = time.monotonic()
        self._last_log_records = 0
        self._refused = 0  # events the handler refused in the last write (dead-lettered)
        #: the consumer's assignment as of the last poll (read by handlers on any thread)
        self.assignment: frozenset[Any] = frozenset()
        self._next: tuple[list[Any], dict[Any, int]] | None = None
        self._inflight: tuple[Future[bool], dict[Any, int]] | None = None
        #: partitions revoked since the gathering poll last looked (set by the listener)
        self._revoked: set[Any] = set()
        self._revoked_lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None
        if settings.pipeline:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="batch-write")
            # A rebalance happens inside poll; the partitions must not move to another
            # consumer while this one still writes their batch.
            consumer.subscribe(
                topics=sorted(consumer.subscription() or ()), listener=_wait_on_revoke(self)
            )

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        idle_exit_s: float | None = None,
        max_records: int | None = None,
    ) -> LoopStats:
        """Loop until ``stop`` is set, ``idle_exit_s`` passes with no records, or ``max_records``."""
        stop = stop or threading.Event()
        idle_since = time.monotonic()
        while not stop.is_set():
            n = self.step(stop)
            now = time.monotonic()
            if n:
                idle_since = now
            elif idle_exit_s is not None and now - idle_since >= idle_exit_s:
                break
            if max_records is not None and self.stats.records >= max_records:
                break
        return self.stats

    def _poll(
        self, timeout_ms: int | None = None, max_records: int | None = None
    ) -> tuple[list[Any], dict[Any, int]]:
        """The polled records, flat, and the offsets to commit after them."""
        polled = self.consumer.poll(
            timeout_ms=self.s.poll_timeout_ms if timeout_ms is None else timeout_ms,
            max_records=max_records or self.s.max_batch,
        )
        self.assignment = frozenset(self.consumer.assignment())
        return [r for batch in polled.values() for r in batch], polled_offsets(polled)

    def _gather(self, job: Future[bool]) -> tuple[list[Any], dict[Any, int]]:
        """The next batch: everything polled until ``job`` (the batch in flight) is done.

        Polling once and holding that batch until the write ends would make its records
        wait a whole write on top of their own (freshness ~2 writes); gathering until
        the write ends lets the next batch start with every record that arrived meanwhile.
        Short polls (``gather_poll_ms``) bound how late it notices the end. Records
        gathered from a partition that a rebalance then revoked are dropped, not
        written: they are uncommitted, and the partition's owner (this consumer again,
        when it is re-assigned) fetches them anew from the committed offset.
        """
        records: list[Any] = []
        offsets: dict[Any, int] = {}
        with self._revoked_lock:
            self._revoked = set()
        while len(records) < self.s.max_batch:
            got, got_offsets = self._poll(self.s.gather_poll_ms, self.s.max_batch - len(records))
            with self._revoked_lock:
                gone, self._revoked = self._revoked, set()
            if gone:
                records, offsets = _without(records, offsets, gone)
            records += got
            offsets.update(got_offsets)
            if job.done():
                break
        return records, offsets

    def step(self, stop: threading.Event | None = None) -> int:
        """One poll-process-commit cycle; returns the number of records handled."""
        if self._worker is not None:
            return self._step_pipelined(stop)
        records, _ = self._poll()
        if not records:
            self._maybe_log()
            return 0
        t0 = time.monotonic()
        good, bad = split_records(records, self.limits, self.expect)
        spans = record_spans(records)
        if not self._with_retry(lambda: self._write(good, bad, spans), stop):
            return 0  # stopping mid-retry: nothing committed, the batch is re-delivered
        self._commit()
        self._count(len(records), len(good) - self._refused, len(bad) + self._refused, t0)
        return len(records)

    def _step_pipelined(self, stop: threading.Event | None) -> int:
        """``step`` with the next batch polled while this one is written.

        Fetching the next records (kafka-python, pure Python) runs while the handler is
        in code that releases the GIL (the tower, fsync, SQLite); the next batch is
        everything that arrived until this write ended (``_gather``). Offsets are
        committed explicitly, per batch, only after that batch's writes; a rebalance
        waits for the batch in flight (``_wait_on_revoke``). Records prefetched when the
        loop stops are not committed, so they are re-delivered.
        """
        assert self._worker is not None
        (records, offsets), self._next = (self._next or self._poll()), None
        if not records:
            self._maybe_log()
            return 0
        t0 = time.monotonic()
        good, bad = split_records(records, self.limits, self.expect)
        spans = record_spans(records)
        job = self._worker.submit(self._with_retry, lambda: self._write(good, bad, spans), stop)
        self._inflight = (job, offsets)
        try:
            self._next = self._gather(job)
        finally:
            ok = self.finish_inflight()
        if not ok:
            self._next = None  # stopping: the prefetched records are re-delivered
            return 0
        self._count(len(records), len(good) - self._refused, len(bad) + self._refused, t0)
        return len(records)

    def finish_inflight(self) -> bool:
        """Wait for the batch being written, commit its offsets; False if it was abandoned."""
        if self._inflight is None:
            return True
        job, offsets = self._inflight
        self._inflight = None
        if not job.result():
            return False
        self._commit(offsets)
        return True

    def _count(self, n: int, n_good: int, n_bad: int, t0: float) -> None:
        st = self.stats
        st.batches += 1
        st.records += n
        st.accepted += n_good
        st.dead_lettered += n_bad
        if self.on_batch:
            self.on_batch(n_good, n_bad, time.monotonic() - t0)
        self._maybe_log()

    def _write(self, good: list[Accepted], bad: list[DeadLetter], spans: Spans) -> None:
        futures = [
            self.dlq.send(self.dlq_topic, key=d.key, value=d.value, headers=d.headers) for d in bad
        ]
        # A handler that stamps what it wrote (``streaming.high_water``) learns the offsets
        # the loop will commit, dead letters included, and is called even when none is good.
        begin = getattr(self.handler, "begin_batch", None)
        if begin is not None:
            begin(spans)
        refused = (self.handler(good) or []) if good or begin is not None else []
        for a, why in refused:
            d = make_dead_letter(a.key, a.value, a.source, why)
            futures.append(
                self.dlq.send(self.dlq_topic, key=d.key, value=d.value, headers=d.headers)
            )
        self._refused = len(refused)
        for f in futures:
            f.get(timeout=30)  # raises if the dead letter was not acknowledged

    def _with_retry(self, fn: Callable[[], None], stop: threading.Event | None) -> bool:
        backoff = self.s.retry_backoff_s
        while True:
            try:
                fn()
                return True
            except Exception as exc:  # noqa: BLE001 - any write failure means: retry, don't commit
                self.stats.retries += 1
                log.warning(
                    "batch write failed (%s: %s); retrying in %.1fs without committing",
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                if stop is not None and stop.wait(backoff):
                    return False
                if stop is None:
                    time.sleep(backoff)
                backoff = min(backoff * 2, self.s.retry_max_backoff_s)

    def _commit(self, offsets: dict[Any, int] | None = None) -> None:
        """Commit (the positions, or ``offsets``), retrying a broker restart instead of dying.

        Giving up after ``commit_retry_s`` is safe: the features are already written,
        so an uncommitted batch is only re-delivered (and rewritten identically) after a
        restart, and the next successful commit covers it anyway.
        """
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        explicit = (
            None
            if offsets is None
            else {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
        )
        deadline = time.monotonic() + self.s.commit_retry_s
        backoff = self.s.retry_backoff_s
        while True:
            try:
                self.consumer.commit(explicit)
                return
            except CommitFailedError as exc:
                # A rebalance took the partitions; the new owner re-processes the batch.
                log.warning("offset commit failed after rebalance: %s", exc)
                return
            except KafkaError as exc:
                if time.monotonic() + backoff > deadline:
                    log.error(
                        "offset commit failed for %.0fs (%s); moving on", self.s.commit_retry_s, exc
                    )
                    return
                log.warning("offset commit failed (%s); retrying in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.s.retry_max_backoff_s)

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if now - self._last_log < self.s.log_every_s:
            return
        st = self.stats
        rate = (st.records - self._last_log_records) / (now - self._last_log)
        log.info(
            "consumed %d records (%.0f/s), %d dead-lettered, %d retries",
            st.records,
            rate,
            st.dead_lettered,
            st.retries,
        )
        self._last_log, self._last_log_records = now, st.records


def _without(
    records: list[Any], offsets: dict[Any, int], gone: set[Any]
) -> tuple[list[Any], dict[Any, int]]:
    """``records`` and ``offsets`` less those of the partitions in ``gone``."""
    names = {(tp.topic, tp.partition) for tp in gone}
    kept = [r for r in records if (r.topic, r.partition) not in names]
    return kept, {tp: o for tp, o in offsets.items() if (tp.topic, tp.partition) not in names}


def _wait_on_revoke(loop: MicroBatchLoop) -> Any:
    """A rebalance listener: partitions are given up only after their batch is written.

    kafka-python runs it on its IO thread, where committing would deadlock; it only
    waits. The loop's commit then fails if the partitions moved, and the new owner
    re-processes the batch on top of the complete state (idempotent), instead of
    racing with a write still in flight.
    """
    from kafka import ConsumerRebalanceListener

    class WaitOnRevoke(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            with loop._revoked_lock:
                loop._revoked.update(revoked)  # gathered records of these are dropped
            inflight = loop._inflight
            if inflight is not None:
                inflight[0].exception()  # blocks until the write is done (or abandoned)

        def on_partitions_assigned(self, assigned: Any) -> None:
            pass

    return WaitOnRevoke()


def close_loop(loop: MicroBatchLoop) -> None:
    """Close the consumer without committing (the loop commits after each write) and the DLQ producer."""
    loop.consumer.close(autocommit=False)
    loop.dlq.flush()
    loop.dlq.close()
