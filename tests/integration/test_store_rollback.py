"""Redis restarted from an older snapshot: detected, rebuilt from the logs, never served stale.

Issue 25's finding, reproduced on the production profile (a private Redis holding the online
store and the windows, the CI PostgreSQL holding the offline log): 1,960 events are consumed
and committed, Redis is killed (as ``shutdown nosave``) and started from a ``dump.rdb`` taken
after the first 1,000. The store then lacks committed events. The running consumer finds its
high-water marks below what it committed (its periodic check), marks the partitions
``degraded``, rebuilds their users from the offline log and clears the marks. Afterwards no
event is missing from any window and every embedding equals the batch recomputation; a
reader polling ``rank`` throughout never got a 200 with a user's snapshot (stale) embedding
for a request that began after the consumer marked the store degraded.

A second restart from the same snapshot while no consumer runs is found at the next
consumer's start-up, before it reads a record.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from feature_repo.schema import USER_TOWER
from feature_repo.store import FeatureStoreHandle
from learn_core.datasets import load_dataset
from learn_core.history import windows_from_log
from learn_core.serving import BootstrapTowers, ModelCache
from ranking.core import DegradedError
from ranking.reader import RankingReader
from ranking.settings import RankingSettings
from streaming.user_sinks import open_history_store
from tests.integration.stream_checks import PrivateRedis, check_stream, source_log, teardown
from tests.integration.test_faults import RunningConsumer, _committed, _store, _wait
from tests.integration.test_interaction_e2e import (
    H,
    content_vectors,
    kafka_settings,
    produce,
    write_content,
)
from tests.unit.test_ranking import MemoryModels, small_model

pytestmark = pytest.mark.integration

N_FIRST, N_ALL = 1000, 1960  # the finding's 1,960 committed events


def _consumer(bootstrap: str, k, handle: FeatureStoreHandle, group: str) -> RunningConsumer:  # noqa: ANN001
    """An interaction consumer on a thread, checking its store every second."""
    return RunningConsumer(
        bootstrap, k, handle, group, retry_max_backoff_s=0.5, store_check_s=1.0, held_recheck_s=0.2
    )


def _committed_sum(bootstrap: str, group: str) -> int:
    """The group's committed offsets, summed (0 while its coordinator is not ready)."""
    from kafka.errors import KafkaError

    try:
        return sum(_committed(bootstrap, group).values())
    except KafkaError:
        return 0


def _restart_from_snapshot(server: PrivateRedis, snapshot: Path) -> None:
    """SIGKILL (nothing saved), drop the append-only file, start from ``snapshot``."""
    server.kill()
    shutil.rmtree(server.dir / "appendonlydir", ignore_errors=True)
    shutil.copy(snapshot, server.dir / "dump.rdb")
    server.start(appendonly=False)


def _missing(handle: FeatureStoreHandle, events) -> int:  # noqa: ANN001
    """Events of ``events`` that belong in a user's window but are not in the stored one."""
    want = windows_from_log(source_log(events), H)
    history = open_history_store(handle)
    try:
        got = history.get_many(want)
    finally:
        history.close()
    return sum(
        len({e.event_id for e in w.entries} - {e.event_id for e in got[u].entries})
        if u in got
        else len(w)
        for u, w in want.items()
    )


class Poller:
    """Calls ``reader.rank`` for ``users`` in a loop; keeps (start time, user, vector|None)."""

    def __init__(self, reader: RankingReader, users: list[str]) -> None:
        self.reader, self.users = reader, users
        self.seen: list[tuple[float, str, np.ndarray | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for u in self.users:
                t = time.time()
                try:
                    self.seen.append((t, u, self.reader.rank(u, ["i0001"]).user_embedding))
                except DegradedError:
                    self.seen.append((t, u, None))
                except Exception:  # noqa: BLE001 - Redis restarting: connection errors
                    pass
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_redis_from_an_older_snapshot_is_rebuilt_and_never_served_stale(
    kafka_bootstrap: str,
    topic_factory,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    feast_profile: str,
) -> None:
    if feast_profile != "production":
        pytest.skip("the snapshot restart is a Redis fault (production profile)")
    server: PrivateRedis = request.getfixturevalue("private_redis")
    handle = _store(feast_profile, tmp_path / "feast", redis_url=server.url)
    ds = load_dataset("sample")
    content = content_vectors(ds.item_ids)
    events = ds.interactions.iloc[:N_ALL]
    group = f"g-{uuid.uuid4().hex[:8]}"
    version = BootstrapTowers().current_version()
    assert version is not None
    reader = RankingReader(
        handle,
        ModelCache(MemoryModels(**{version: small_model(0)}), check_s=60),
        RankingSettings(status_check_s=0.0, item_cache_s=0.0),
    )
    try:
        write_content(handle, content)
        k = kafka_settings(kafka_bootstrap, topic_factory)
        produce(type(ds)(ds.name, ds.items, ds.interactions.iloc[:N_FIRST]), k, N_FIRST)
        run = _consumer(kafka_bootstrap, k, handle, group)
        try:
            _wait(lambda: _committed_sum(kafka_bootstrap, group) == N_FIRST, 90, "1,000 commits")
            import redis

            r = redis.Redis.from_url(server.url)
            r.save()  # the older snapshot
            r.close()
            snapshot = tmp_path / "old-dump.rdb"
            shutil.copy(server.dir / "dump.rdb", snapshot)
            later = set(ds.interactions["user_id"].iloc[N_FIRST:N_ALL])
            users = sorted(later)
            got = handle.read_embeddings(USER_TOWER.name, users, model_version=version)
            stale = {u: got.vectors[j].copy() for j, u in enumerate(users) if got.found[j]}

            produce(type(ds)(ds.name, ds.items, ds.interactions.iloc[N_FIRST:N_ALL]), k, N_ALL)
            _wait(lambda: _committed_sum(kafka_bootstrap, group) == N_ALL, 90, "1,960 commits")
            assert run.handler.repair.rebuilds == 0

            poller = Poller(reader, users)
            try:
                _restart_from_snapshot(server, snapshot)
                lost = _missing(handle, events)  # before the consumer's check notices
                _wait(lambda: run.handler.repair.rebuilds >= 1, 30, "the rebuild", 0.05)
                _wait(lambda: not reader.status.fresh(), 30, "the degraded marks to clear", 0.05)
                time.sleep(0.5)  # requests after the rebuild
            finally:
                poller.close()
        finally:
            run.close()
        detected = run.handler.repair.detected_at
        assert detected is not None
        assert lost > 0, "the snapshot did not lose anything: the test shows nothing"
        assert _missing(handle, events) == 0
        check_stream(handle, events, content)  # windows and embeddings == batch reference

        after = handle.read_embeddings(USER_TOWER.name, users, model_version=version)
        final = {u: after.vectors[j] for j, u in enumerate(users)}
        changed = {u for u in stale if not np.allclose(stale[u], final[u], atol=1e-6)}
        assert changed, "no user's embedding changed after the snapshot"
        served_stale = [
            (t - detected, u)
            for t, u, vec in poller.seen
            if t > detected and vec is not None and u in changed
            and np.allclose(vec, stale[u], atol=1e-6)
        ]  # fmt: skip
        assert served_stale == [], served_stale[:5]
        assert any(t > detected and vec is not None for t, _, vec in poller.seen)

        # The same snapshot again, with no consumer running: found at start-up.
        _restart_from_snapshot(server, snapshot)
        assert _missing(handle, events) > 0
        run = _consumer(kafka_bootstrap, k, handle, group)
        try:
            assert run.handler.repair.rebuilds == 1  # before its first batch
            assert not reader.status.fresh()
        finally:
            run.close()
        assert _missing(handle, events) == 0
        check_stream(handle, events, content)
    finally:
        reader.close()
        teardown(handle)
