"""The backfill on Ray Data (one local Ray, 2 CPUs, for the module) equals the local
backfill row for row, on both store profiles; a wrong RAY_ADDRESS fails at once, naming it.

Two stores hold the same synthetic catalogue and log; the local engine backfills one,
Ray the other, and every item's and user's online vector of the version is compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from feature_repo.schema import ITEM_TOWER, USER_TOWER
from learn_core.models.anchored import AnchoredConfig
from learn_core.registry import ModelRegistry
from learn_core.serving import as_serving
from tests.integration.conftest import cleanup, make_settings
from tests.integration.test_torchrun import _data, store_with_log
from trainers.anchored import AnchoredTrainConfig, train_anchored
from trainers.jobs.backfill import backfill
from trainers.train import serving_contract

pytestmark = pytest.mark.integration

ray = pytest.importorskip(
    "ray", reason="Ray is an extra: pip install -e '.[ray]' (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module: its start-up (~15 s on 2 cores) is paid once."""
    from trainers.jobs.ray_backfill import BackfillEngineSettings, connect

    os.environ.pop("RAY_ADDRESS", None)
    connect(BackfillEngineSettings(ray_workers=2))
    yield
    ray.shutdown()


def _version(root: Path) -> tuple[ModelRegistry, str]:
    split, content = _data()
    net = AnchoredConfig(d=16, max_len=8, dropout=0.0, whiten_dim=16)
    res = train_anchored(
        AnchoredTrainConfig(net=net, batch_size=64, epochs=1, eval_every=1), split, content
    )
    registry = ModelRegistry(root)
    serving = serving_contract(res.model, 8, "sliding", "planted")
    return registry, registry.save(res.model, content_model="planted", serving=serving)


def _vectors(handle, version: str, ids: list[str], users: list[str]) -> np.ndarray:
    items, who = handle.online.read_vectors(
        [(ITEM_TOWER.name, ids), (USER_TOWER.name, users)], version
    )
    assert items.ok.all() and who.ok.all()
    return np.concatenate([items.vectors, who.vectors])


def test_ray_backfill_equals_the_local_one_row_for_row(
    feast_profile: str, tmp_path: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray's side runs as ``learnrec run-job backfill --engine ray`` does (``run_job``)."""
    from trainers.jobs.scheduler import run_job

    registry, version = _version(tmp_path / "registry")
    registry.promote(version)
    model = as_serving(version, registry.load(version))
    local = store_with_log(make_settings(feast_profile, tmp_path / "a"))
    theirs = make_settings(feast_profile, tmp_path / "b")
    onray = store_with_log(theirs)
    for name in type(theirs).model_fields:  # run_job opens store b from the environment
        value = getattr(theirs, name)
        if value is not None:
            plain = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            monkeypatch.setenv(f"LEARNREC_FEAST_{name.upper()}", str(plain))
    for key, value in {
        "LEARNREC_FEAST_DATA_DIR": str(theirs.resolved_data_dir()),
        "LEARNREC_REGISTRY_ROOT": str(registry.root),
        "LEARNREC_RETRAIN_HISTORY_LEN": "8",
        "LEARNREC_BACKFILL_RAY_BATCH_ROWS": "16",  # several batches per actor
    }.items():
        monkeypatch.setenv(key, value)
    try:
        a = backfill(local, model, history_len=8)
        t0 = time.monotonic()
        b = run_job("backfill", engine="ray")
        ray_s = time.monotonic() - t0
        assert (a.items, a.users, a.users_skipped) == (b["items"], b["users"], b["users_skipped"])
        assert a.items == 60 and a.users == 90
        split, _ = _data()
        items, users = list(split.item_ids), sorted(split.users)
        va, vb = _vectors(local, version, items, users), _vectors(onray, version, items, users)
        np.testing.assert_allclose(vb, va, atol=1e-6, rtol=0)
        assert float(np.abs(va).max()) > 0.01  # real vectors, not zeros
        print(f"ray backfill {ray_s:.1f}s, local {a.seconds:.1f}s")
    finally:
        cleanup(local)
        cleanup(onray)


def test_a_wrong_ray_address_fails_at_once_naming_it(tmp_path: Path) -> None:
    """A child process (this module's Ray is already joined): no cluster answers there."""
    code = (
        "from trainers.jobs.ray_backfill import BackfillEngineSettings, connect\n"
        "connect(BackfillEngineSettings(ray_connect_timeout_s=3))\n"
    )
    env = os.environ | {"RAY_ADDRESS": "127.0.0.1:9"}  # discard port: nothing listens
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.returncode != 0
    assert "RAY_ADDRESS: no Ray cluster answers at '127.0.0.1:9'" in proc.stderr
    assert time.monotonic() - t0 < 30


def test_the_address_check_accepts_a_real_ray_head_and_refuses_other_servers(
    local_ray: None,
) -> None:
    """The gRPC probe that keeps ``ray.init`` from retrying for minutes on a wrong port."""
    import socket

    from learn_core.settings import ServiceUnavailableError
    from trainers.jobs.ray_backfill import _check_address

    _check_address(ray.get_runtime_context().gcs_address, 3)  # this module's Ray head
    with socket.socket() as srv:  # a server that answers, but is no Ray
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]

        def answer() -> None:
            conn, _ = srv.accept()
            conn.sendall(b"-ERR unknown command\r\n")
            conn.close()

        threading.Thread(target=answer, daemon=True).start()
        with pytest.raises(ServiceUnavailableError, match="not as a Ray cluster"):
            _check_address(f"127.0.0.1:{port}", 3)


def _kill_one_worker_once_alive(
    killed: list[int], done: threading.Event, earlier: set[str]
) -> None:
    """Once an actor of the pool is constructed (ALIVE: its model loaded, batches
    flowing), SIGKILL its process; look until the pass is ``done`` (on a loaded machine
    the actors may take minutes to come up). Never the ``earlier`` actors: an earlier
    pass's pool is torn down after it ends, so its actors may still show ALIVE."""
    import signal

    while not killed and not done.is_set():
        for actor_id, actor in ray._private.state.actors().items():  # GCS's (test only)
            if actor_id in earlier:
                continue
            if "MapWorker" in actor["ActorClassName"] and actor["State"] == "ALIVE":
                time.sleep(0.3)
                os.kill(actor["Pid"], signal.SIGKILL)
                killed.append(actor["Pid"])
                return
        time.sleep(0.1)


@pytest.mark.parametrize("retries", [3, 0])
def test_a_worker_killed_mid_pass_loses_nothing(
    local_ray: None, tmp_path: Path, retries: int
) -> None:
    """SIGKILL one actor of the pool mid-pass: its batches re-run, every row comes back
    equal to the local pass; with no retries allowed, the pass fails, naming the settings."""
    from learn_core.inference import embed_windows, encode_items
    from trainers.jobs.ray_backfill import BackfillEngineSettings, RayBackfillFailed, RayEngine

    registry, version = _version(tmp_path / "registry")
    model = as_serving(version, registry.load(version))
    rng = np.random.default_rng(0)
    ids = [f"x{n}" for n in range(12000)]  # 775 batches of 16: a pass of several seconds
    content = rng.standard_normal((len(ids), 16)).astype(np.float32)
    windows = [[ids[k] for k in rng.integers(0, len(ids), 1 + n % 8)] for n in range(400)]
    s = BackfillEngineSettings(ray_batch_rows=16, ray_max_retries=retries)
    engine = RayEngine(str(registry.root), model, 8, s)
    killed: list[int] = []
    done = threading.Event()
    earlier = set(ray._private.state.actors())  # before this pass's pool exists
    killer = threading.Thread(
        target=_kill_one_worker_once_alive, args=(killed, done, earlier), daemon=True
    )
    killer.start()
    try:
        if retries == 0:
            with pytest.raises(RayBackfillFailed, match="LEARNREC_BACKFILL_RAY_MAX_RETRIES=0"):
                engine.passes(ids, content, windows)
            assert killed
            return
        t0 = time.monotonic()
        items, users = engine.passes(ids, content, windows)
        print(f"pass with a kill: {time.monotonic() - t0:.1f} s")
    finally:
        done.set()
        killer.join(5)
    assert killed, "no Ray worker was seen"
    np.testing.assert_allclose(items, encode_items(model, content, ids), atol=1e-6, rtol=0)
    by_id = dict(zip(ids, content, strict=True))
    want = embed_windows(model.user_tower, windows, by_id, 8)
    np.testing.assert_allclose(users, want, atol=1e-6, rtol=0)


def test_a_pool_larger_than_the_local_ray_is_refused_naming_the_settings(
    local_ray: None, tmp_path: Path
) -> None:
    """2 actors of all the local Ray's CPUs each would wait for a CPU forever: refused."""
    import ray

    from learn_core.settings import ConfigError
    from trainers.jobs.ray_backfill import BackfillEngineSettings, RayEngine

    registry, version = _version(tmp_path / "registry")
    model = as_serving(version, registry.load(version))
    have = int(ray.cluster_resources()["CPU"])
    s = BackfillEngineSettings(ray_workers=2, ray_cpus_per_worker=have)
    engine = RayEngine(str(registry.root), model, 8, s)
    content = np.zeros((1, 16), np.float32)
    want = f"LEARNREC_BACKFILL_RAY_CPUS_PER_WORKER={have} needs {2 * have} CPUs"
    with pytest.raises(ConfigError, match=want):
        engine.passes(["x"], content, [["x"]])


@pytest.fixture()
def ray_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Path]]:
    """A Ray cluster of its own at ``RAY_ADDRESS`` (``ray start --head``, 2 CPUs, token
    authentication as Ray 2.59+ starts it): the head's process group and its temp dir."""
    import secrets
    import shutil
    import signal
    import socket
    import tempfile

    from trainers.jobs.ray_backfill import _check_address

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="rayc", dir="/tmp"))  # Ray's socket paths are short
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
         "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp}", "--block"],
        env=os.environ | env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _check_address(f"127.0.0.1:{port}", 2)
                break
            except Exception:
                assert head.poll() is None, "ray start --head exited"
                assert time.monotonic() < deadline, "the Ray head did not answer in 90 s"
                time.sleep(0.5)
        for key, value in (env | {"RAY_ADDRESS": f"127.0.0.1:{port}"}).items():
            monkeypatch.setenv(key, value)
        yield head.pid, temp
    finally:
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait(30)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_cluster_that_goes_away_mid_pass_fails_naming_ray_address(
    ray_cluster: tuple[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a cluster the pass's driver is a child process: without the cluster's token it
    fails naming the variables to set; with it, its rows equal the local pass; and when the cluster is SIGKILLed mid-pass (Ray then ends its driver at once, exit 1),
    the job gets ``RayBackfillFailed`` naming ``RAY_ADDRESS`` within Ray's GCS reconnect
    timeout, not a hang nor its own death, and no rows."""
    import signal

    from learn_core.inference import embed_windows, encode_items
    from learn_core.settings import ServiceUnavailableError
    from trainers.jobs.ray_backfill import BackfillEngineSettings, RayBackfillFailed, RayEngine

    head, temp = ray_cluster
    registry, version = _version(tmp_path / "registry")
    model = as_serving(version, registry.load(version))
    engine = RayEngine(str(registry.root), model, 8, BackfillEngineSettings(ray_workers=1))
    rng = np.random.default_rng(0)
    ids = [f"x{n}" for n in range(300)]
    content = rng.standard_normal((len(ids), 16)).astype(np.float32)
    windows = [[ids[k] for k in rng.integers(0, len(ids), 1 + n % 8)] for n in range(40)]
    with monkeypatch.context() as m:  # a driver without the cluster's token: told what to set
        m.delenv("RAY_AUTH_MODE")
        with pytest.raises(ServiceUnavailableError, match="set RAY_AUTH_MODE=token"):
            engine.passes(ids, content, windows)
    items, users = engine.passes(ids, content, windows)
    np.testing.assert_allclose(items, encode_items(model, content, ids), atol=1e-6, rtol=0)
    by_id = dict(zip(ids, content, strict=True))
    np.testing.assert_allclose(
        users, embed_windows(model.user_tower, windows, by_id, 8), atol=1e-6, rtol=0
    )

    def datasets() -> int:  # Ray Data's log of each dataset it starts executing
        return len(list(temp.glob("session_2*/logs/ray-data/ray-data-dataset_*.log")))

    killed: list[float] = []

    def kill_once_the_next_pass_runs(before: int) -> None:
        deadline = time.monotonic() + 120
        while datasets() <= before and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # its pool starting, its batches flowing
        os.killpg(head, signal.SIGKILL)
        killed.append(time.monotonic())

    many = [f"y{n}" for n in range(30_000)]  # 938 batches of 32: several seconds
    big = rng.standard_normal((len(many), 16)).astype(np.float32)
    slow = RayEngine(
        str(registry.root), model, 8, BackfillEngineSettings(ray_workers=1, ray_batch_rows=32)
    )
    killer = threading.Thread(target=kill_once_the_next_pass_runs, args=(datasets(),))
    killer.start()
    with pytest.raises((RayBackfillFailed, ServiceUnavailableError), match="RAY_ADDRESS") as err:
        slow.passes(many, big, [])
    failed = time.monotonic()
    killer.join(5)
    assert killed, "the pass ended before the cluster was killed: make it longer"
    took = failed - killed[0]
    print(f"cluster gone: {type(err.value).__name__} {took:.1f} s after the kill: {err.value}")
    # At once where the driver was inside a call to its node's object store; else after
    # Ray's GCS reconnect timeout (RAY_gcs_rpc_server_reconnect_timeout_s, 60 s).
    assert took < 90, took
