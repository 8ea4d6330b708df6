"""Fault tests of the interaction consumer through the real broker, on both store profiles.

* SIGKILL the consumer process 5 times mid-stream, restarting it each time;
* restart (SIGKILL) the broker mid-stream;
* take the online store away for 10 s: on ``embedded`` the SQLite online store is held
  locked; on ``production`` a private ``redis-server`` (online store and history) is
  killed and started again on its port with its append-only file.

Each test runs on ``embedded`` (SQLite + parquet) and ``production`` (Redis +
PostgreSQL; skipped, saying why, without the services of ``.ci/services.sh``). Each ends
with ``stream_checks.check_stream``: every event in the offline log exactly once, every
user's online embedding equal to the batch recomputation from the *source* events, every
user's stored window equal to the batch window, nobody held.

Sizes: CI streams 10,000 events from the shipped sample. The brief's 100k-event SIGKILL
run: ``LEARNREC_FAULT_EVENTS=100000 LEARNREC_FAULT_DATA=ml-1m-subset:/path/to/ml-1m``
(marked ``slow``-sized by the env flag; same code).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_repo.schema import INTERACTION_LOG
from feature_repo.settings import FeastSettings
from feature_repo.store import FeatureStoreHandle, open_store
from learn_core.datasets import Dataset, load_dataset
from learn_core.serving import BootstrapTowers
from streaming.interaction_consumer import (
    InteractionConsumerSettings,
    build_interaction_loop,
)
from streaming.item_consumer import close_loop
from streaming.user_sinks import FeastUserSink, open_history_store
from tests.integration.conftest import make_settings
from tests.integration.stream_checks import (
    PrivateRedis,
    check_stream,
    child_env,
    expected_users,
    feast_env,
    teardown,
)
from tests.integration.test_interaction_e2e import (
    H,
    content_vectors,
    kafka_settings,
    produce,
    write_content,
)

pytestmark = pytest.mark.integration

N_EVENTS = int(os.environ.get("LEARNREC_FAULT_EVENTS", "10000"))
REPO = Path(__file__).resolve().parents[2]


def _dataset() -> Dataset:
    spec = os.environ.get("LEARNREC_FAULT_DATA", "sample")
    name, _, path = spec.partition(":")
    return load_dataset(name, path or None)


def _expected(ds: Dataset, n: int) -> dict[str, tuple[np.ndarray, int, int]]:
    """What a clean run writes: the batch function of the first ``n`` source events."""
    return expected_users(ds.interactions.iloc[:n], content_vectors(ds.item_ids))


def _store(profile: str, tmp_path: Path, **update: object) -> FeatureStoreHandle:
    """A fresh store of ``profile`` (its own Feast project), ``update`` applied to its settings."""
    return open_store(make_settings(profile, tmp_path).model_copy(update=update))


def _check(handle: FeatureStoreHandle, ds: Dataset, n: int) -> None:
    check_stream(handle, ds.interactions.iloc[:n], content_vectors(ds.item_ids))


def _committed(bootstrap: str, group: str) -> dict[int, int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offs = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {tp.partition: o.offset for tp, o in offs.items()}


def _wait(cond, timeout_s: float, what: str, every: float = 0.5) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every)


# ------------------------------------------------------------------------- SIGKILL


def child_main() -> None:
    """Entry point of the killed consumer process (config as JSON in argv[1], store from env)."""
    import logging

    from learn_core.settings import load

    logging.basicConfig(level=logging.INFO)
    cfg = json.loads(sys.argv[1])
    from streaming.settings import KafkaSettings

    k = KafkaSettings(**cfg["kafka"])
    handle = open_store(load(FeastSettings), apply=False)
    history = open_history_store(handle)
    s = InteractionConsumerSettings(group_id=cfg["group"], history_len=H, max_batch=250)
    loop, _ = build_interaction_loop(
        cfg["kafka"]["bootstrap_servers"],
        FeastUserSink(handle),
        history,
        BootstrapTowers(),
        settings=s,
        kafka=k,
        # A killed member holds its partitions until its session expires; keep that short
        # so that the restarted consumer re-joins within a few seconds.
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    try:
        loop.run(idle_exit_s=cfg["idle_exit_s"])
    finally:
        close_loop(loop)
        history.close()
        handle.close()


def _progress(handle: FeatureStoreHandle) -> int:
    """Batches durably written: parquet parts (embedded) or logged events (production)."""
    if handle.settings.profile == "production":
        return handle.offline.count(INTERACTION_LOG.name)  # type: ignore[attr-defined]
    d = handle.settings.resolved_data_dir() / "offline" / INTERACTION_LOG.name
    return len(list(d.glob("part-*.parquet")))


def test_sigkill_restarts_lose_nothing(
    kafka_bootstrap: str,
    topic_factory,
    tmp_path: Path,
    feast_profile: str,
) -> None:
    ds = _dataset()
    n = min(N_EVENTS, len(ds.interactions))
    handle = _store(feast_profile, tmp_path / "feast")
    try:
        write_content(handle, content_vectors(ds.item_ids))
        k = kafka_settings(kafka_bootstrap, topic_factory)
        produce(ds, k, n)
        cfg = {
            "kafka": k.model_dump(mode="json"),
            "group": f"g-{uuid.uuid4().hex[:8]}",
            "idle_exit_s": 20.0,
        }
        cmd = [
            sys.executable,
            "-c",
            "import sys; from tests.integration.test_faults import child_main; child_main()",
            json.dumps(cfg),
        ]
        env = child_env({"PYTHONPATH": str(REPO), **feast_env(handle.settings)})
        rng = random.Random(int(os.environ.get("LEARNREC_FAULT_SEED", "0")))
        logs = tmp_path / "child.log"
        kills = 0
        for _ in range(5):
            before = _progress(handle)
            with open(logs, "ab") as out:
                proc = subprocess.Popen(
                    cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            try:
                # Kill mid-stream: after it has written at least one more batch, at a random
                # moment.
                _wait(
                    lambda: _progress(handle) > before or proc.poll() is not None,  # noqa: B023
                    120,
                    "the consumer to make progress",
                    0.05,
                )
                time.sleep(rng.uniform(0.0, 0.3))  # a faster consumer left < 5 kills at 0.6
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                proc.wait()
        assert kills == 5, f"stream finished before 5 kills; raise LEARNREC_FAULT_EVENTS ({n})"
        with open(logs, "ab") as out:
            final = subprocess.run(
                cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300
            )
        assert final.returncode == 0, logs.read_text()[-3000:]
        _check(handle, ds, n)
    finally:
        teardown(handle)


# ------------------------------------------------------------------ in-process consumer


class RunningConsumer:
    """A consumer loop on a thread, for the broker and online-store faults (and the
    store-rollback test, which gives its own group and faster checks)."""

    def __init__(
        self,
        bootstrap: str,
        k,  # noqa: ANN001
        handle: FeatureStoreHandle,
        group: str | None = None,
        **settings: float,
    ) -> None:
        self.group = group or f"g-{uuid.uuid4().hex[:8]}"
        self.history = open_history_store(handle)
        s = InteractionConsumerSettings(
            group_id=self.group,
            history_len=H,
            max_batch=500,
            **{"retry_max_backoff_s": 1.0, **settings},
        )
        self.loop, self.handler = build_interaction_loop(
            bootstrap, FeastUserSink(handle), self.history, BootstrapTowers(), settings=s, kafka=k
        )
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run(self.stop)
        except BaseException as exc:  # noqa: BLE001 - surfaced by close()
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        close_loop(self.loop)
        self.history.close()
        if self.error is not None:
            raise self.error


def _events_in_log(handle: FeatureStoreHandle) -> int:
    return len(handle.read_offline(INTERACTION_LOG.name))


def _first_half_running(
    kafka_bootstrap: str, topic_factory, handle: FeatureStoreHandle, n: int = 6000
):
    """Content in the store, the first n/2 sample events produced, a consumer running."""
    ds = load_dataset("sample")
    write_content(handle, content_vectors(ds.item_ids))
    k = kafka_settings(kafka_bootstrap, topic_factory)
    produce(type(ds)(ds.name, ds.items, ds.interactions.iloc[: n // 2]), k, n // 2)
    return ds, n, k, RunningConsumer(kafka_bootstrap, k, handle)


def _produce_second_half(ds, k, n: int) -> None:
    produce(type(ds)(ds.name, ds.items, ds.interactions.iloc[n // 2 : n]), k, n - n // 2)


def test_broker_restart_mid_stream_loses_nothing(
    kafka_bootstrap: str,
    topic_factory,
    local_kafka,
    tmp_path: Path,
    feast_profile: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handle = _store(feast_profile, tmp_path / "feast")
    try:
        ds, n, k, run = _first_half_running(kafka_bootstrap, topic_factory, handle)
        try:
            _wait(lambda: _events_in_log(handle) > 0, 60, "the first batches")
            caplog.clear()
            local_kafka.restart(hard=True)
            _produce_second_half(ds, k, n)
            _wait(
                lambda: _events_in_log(handle) >= n,
                120,
                f"all events after the restart ({_events_in_log(handle)}/{n}, {run.loop.stats})",
                1.0,
            )
        finally:
            run.close()
        _check(handle, ds, n)
        # What an operator reads: the outage in a few lines, not kafka-python's per-retry flood.
        said = [r.getMessage() for r in caplog.records if r.name == "streaming.kafka_outage"]
        noisy = [
            f"{r.levelname} {r.name}: {r.getMessage()} {r.exc_info and repr(r.exc_info[1])}"
            for r in caplog.records
            if r.name.startswith("kafka.") and r.levelno >= logging.WARNING
        ]
        assert any(m.startswith("lost the connection to the Kafka broker") for m in said), said
        assert any(m.startswith("Kafka broker reachable again after") for m in said), said
        assert len(said) <= 4, said  # lost, back, and a "still unreachable" per 30 s at most
        assert len(noisy) <= 3, noisy  # was ~3 ERROR lines per reconnection attempt
    finally:
        teardown(handle)


@contextmanager
def _sqlite_locked(db: Path) -> Iterator[None]:
    """The embedded online store unavailable: its SQLite file held in an exclusive lock."""
    lock = sqlite3.connect(str(db), timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        lock.execute("ROLLBACK")
        lock.close()


@contextmanager
def _redis_down(server: PrivateRedis) -> Iterator[None]:
    """The production online store (and history) unavailable: its Redis killed, then restarted."""
    server.kill()
    try:
        yield
    finally:
        server.start()


def test_online_store_outage_retries_without_commit(
    kafka_bootstrap: str, topic_factory, tmp_path: Path, request: pytest.FixtureRequest,
    feast_profile: str,
) -> None:  # fmt: skip
    if feast_profile == "production":
        server: PrivateRedis = request.getfixturevalue("private_redis")
        handle = _store(feast_profile, tmp_path / "feast", redis_url=server.url)
        outage = lambda: _redis_down(server)  # noqa: E731
    else:
        handle = _store(feast_profile, tmp_path / "feast")
        online_db = handle.settings.resolved_data_dir() / "online.db"
        outage = lambda: _sqlite_locked(online_db)  # noqa: E731
    try:
        ds, n, k, run = _first_half_running(kafka_bootstrap, topic_factory, handle)
        try:
            _wait(lambda: _events_in_log(handle) >= n // 2, 60, "the first half")
            # The log can hold a batch before its offsets are committed (the offline appends
            # overlap the online write), so the outage starts only once the first half is
            # committed too; otherwise a batch caught mid-commit is rightly held back.
            _wait(
                lambda: sum(_committed(kafka_bootstrap, run.group).values()) >= n // 2,
                30,
                "the first half's commits",
            )
            retries = run.loop.stats.retries
            with outage():  # the online store is unavailable from here
                t_down = time.monotonic()
                _produce_second_half(ds, k, n)
                time.sleep(max(0.0, 6.0 - (time.monotonic() - t_down)))
                during = _committed(kafka_bootstrap, run.group)
                time.sleep(max(0.0, 10.0 - (time.monotonic() - t_down)))
                assert _committed(kafka_bootstrap, run.group) == during  # nothing committed
                # The offline appends of the batch in flight overlap its online write, so the
                # log may already hold that batch (idempotent by event_id); nothing else lands.
                in_log = _events_in_log(handle)
                assert n // 2 <= in_log <= n, in_log
                assert sum(during.values()) == n // 2
            assert run.loop.stats.retries > retries
            _wait(lambda: _events_in_log(handle) >= n, 120, "recovery after the outage", 1.0)
            _wait(lambda: sum(_committed(kafka_bootstrap, run.group).values()) == n, 30, "commits")
        finally:
            run.close()
        _check(handle, ds, n)
    finally:
        teardown(handle)


def test_expected_reference_is_not_trivial() -> None:
    """The fault checks compare against a reference that depends on every event."""
    ds = load_dataset("sample")
    a = _expected(ds, 2000)
    b = _expected(ds, 2001)
    user = ds.interactions["user_id"].iloc[2000]
    assert user in b and (user not in a or not np.allclose(a[user][0], b[user][0]))
    assert pd.Series([v[1] for v in a.values()]).max() <= H


def test_history_check_can_fail(tmp_path: Path) -> None:
    """``check_history`` notices a window that lost an entry, or a user left held."""
    from learn_core.history import UserHistory, windows_from_log
    from tests.integration.stream_checks import check_history, source_log

    events = load_dataset("sample").interactions.iloc[:300]
    want = windows_from_log(source_log(events), H)
    handle = _store("embedded", tmp_path / "feast")
    history = open_history_store(handle)
    try:
        history.apply(want, [])
        check_history(handle, events)
        user = max(want, key=lambda u: len(want[u]))
        history.apply({user: UserHistory(want[user].entries[1:])}, [])
        with pytest.raises(AssertionError, match="windows differ"):
            check_history(handle, events)
        history.apply({user: want[user]}, [user])
        with pytest.raises(AssertionError, match="still held"):
            check_history(handle, events)
    finally:
        history.close()
        teardown(handle)
