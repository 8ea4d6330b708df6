"""Set-up and end checks shared by the streaming fault tests and the replica test.

* ``expected_users``: the batch recomputation of the source events (what a clean run
  writes; ``test_interaction_e2e`` shows that a clean run equals it);
* ``check_stream``: every event in the offline log exactly once, every user's online
  embedding equal to the batch recomputation, every user's stored window equal to the
  batch window (a crash or a rebalance lost or doubled nothing), nobody left held;
* ``feast_env``: the ``LEARNREC_FEAST_*`` of a child process for given settings;
* ``teardown``: drop a test's Feast rows and tables and its history keys;
* ``PrivateRedis``: a ``redis-server`` of the test's own, to stop and start (the CI
  Redis of ``.ci/services.sh`` is shared by the whole session).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import SecretStr

from feature_repo.schema import INTERACTION_LOG
from feature_repo.settings import FeastSettings
from feature_repo.store import FeatureStoreHandle
from learn_core.history import windows_from_log
from learn_core.inference import recompute_users
from learn_core.serving import BootstrapTowers
from streaming.user_sinks import open_history_store
from tests.integration.conftest import cleanup
from tests.integration.test_interaction_e2e import H, assert_online_matches


def source_log(events: pd.DataFrame) -> pd.DataFrame:
    """Source interactions (a data set's rows) in the offline log's column names."""
    return events.rename(columns={"occurred_at": "event_timestamp"})


def expected_users(
    events: pd.DataFrame, content: dict[str, np.ndarray], towers: BootstrapTowers | None = None
) -> dict[str, tuple[np.ndarray, int, int]]:
    """user -> (embedding, history_len, event time ms) of the bootstrap tower over ``events``."""
    tower = (towers or BootstrapTowers()).load("").tower
    return recompute_users(source_log(events), content, tower, H)


def check_history(handle: FeatureStoreHandle, events: pd.DataFrame) -> None:
    """Each user's stored window is the batch window of ``events``; nobody is held."""
    want = windows_from_log(source_log(events), H)
    history = open_history_store(handle)
    try:
        got = history.get_many(want)
        held = history.held(None)
    finally:
        history.close()
    wrong = sorted(u for u in want if u not in got or got[u].entries != want[u].entries)
    assert not wrong, f"{len(wrong)} users' windows differ from the batch windows: {wrong[:5]}"
    assert not held, f"{len(held)} users still held: {sorted(held)[:5]}"


def check_stream(
    handle: FeatureStoreHandle, events: pd.DataFrame, content: dict[str, np.ndarray]
) -> None:
    """The end state after ``events`` streamed through, however often it was interrupted."""
    log = handle.read_offline(INTERACTION_LOG.name)
    assert len(log) == len(events) and log["event_id"].is_unique, (len(log), len(events))
    assert set(log["event_id"]) == set(events["event_id"])
    towers = BootstrapTowers()
    version = towers.current_version()
    assert version is not None
    assert_online_matches(handle, expected_users(events, content, towers), version)
    check_history(handle, events)


def feast_env(settings: FeastSettings) -> dict[str, str]:
    """``LEARNREC_FEAST_*`` that make a child process open the same store as ``settings``."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"LEARNREC_FEAST_{name.upper()}"] = str(value)
    return env


def drop_history(settings: FeastSettings) -> None:
    """Delete the interaction consumer's keys of this project from Redis (production)."""
    if settings.profile != "production":
        return  # the SQLite file lives in the test's tmp dir
    import redis

    r = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(r.scan_iter(match=f"learnrec:{settings.project}:*", count=1000))
        for i in range(0, len(keys), 1000):
            r.delete(*keys[i : i + 1000])
    finally:
        r.close()


def teardown(handle: FeatureStoreHandle) -> None:
    drop_history(handle.settings)
    cleanup(handle)


class PrivateRedis:
    """A ``redis-server`` child on a free loopback port, with an append-only file.

    Append-only as in ``docker-compose.yml``: the interaction consumers keep their
    windows in Redis, so a Redis that comes back must come back with its data.
    """

    def __init__(self, data_dir: Path) -> None:
        from devstack.kafka import free_port

        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 30.0, *, appendonly: bool = True) -> None:
        """Start it; ``appendonly=False`` loads ``dump.rdb`` instead (an older snapshot)."""
        import redis

        aof = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if appendonly
            else ["--appendonly", "no"]
        )
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.dir), "--save", "", *aof, "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server on port {self.port} did not start: "
                        + (self.dir / "redis.log").read_text()[-2000:]
                    )
                time.sleep(0.1)
        finally:
            client.close()

    def kill(self) -> None:
        """Crash it (SIGKILL): acknowledged writes are in the append-only file already."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment less any ``LEARNREC_*`` and broker address, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LEARNREC_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(extra)
    return env
