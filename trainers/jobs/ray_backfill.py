"""The backfill's tower passes on Ray Data: ``map_batches`` over an actor pool.

``learnrec run-job backfill --engine ray`` (or ``LEARNREC_BACKFILL_ENGINE=ray``) runs
``trainers.jobs.backfill.backfill`` with a ``RayEngine``: the job still reads the logs,
rebuilds the windows and writes every row through the same feature-store writers, so the
blue/green rules hold as on the local path; only the tower passes (item content -> item
vectors, user windows -> user vectors) run as Ray Data jobs. Each actor loads the model
version once from the registry, and the content vectors once from Ray's object store.

``ray.init()`` starts a local Ray (this machine's CPUs) unless ``RAY_ADDRESS`` names a
cluster; an address that does not answer fails at once, naming ``RAY_ADDRESS``.

On a cluster the pass's Ray driver runs in a child process (``python -m
trainers.jobs.ray_backfill DIR``): when the cluster (or the node the driver is attached
to) goes away, Ray ends its driver process at once ("connection to the plasma store is
failed. Terminate the process", exit 1, in Ray's log only; at the latest after
``RAY_gcs_rpc_server_reconnect_timeout_s``, 60 s). In the job's own process that
would end the job, or a scheduler running it, with no word; in a child it becomes
``RayBackfillFailed`` naming ``RAY_ADDRESS``, and nothing of the pass is written.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from learn_core.settings import ConfigError, ServiceUnavailableError

if TYPE_CHECKING:
    from learn_core.serving import ServingModel

log = logging.getLogger(__name__)


class BackfillEngineSettings(BaseSettings):
    """Where the backfill's tower passes run (env prefix ``LEARNREC_BACKFILL_``)."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_BACKFILL_", extra="forbid", allow_inf_nan=False
    )

    engine: Literal["local", "ray"] = Field(
        "local", description="local: in the job's process; ray: Ray Data map_batches (RAY_ADDRESS)"
    )
    ray_workers: int = Field(
        2, ge=1, le=4096, description="actors in the pool (each loads the model once)"
    )
    ray_batch_rows: int = Field(4096, ge=1, le=1_000_000, description="rows per map_batches batch")
    ray_cpus_per_worker: int = Field(
        0, ge=0, le=1024,
        description="CPUs (torch threads) per actor; 0: a local Ray's CPUs shared, 1 on a cluster",
    )  # fmt: skip
    ray_max_retries: int = Field(
        3, ge=0, le=100, description="restarts of a dead actor and retries of its batches"
    )
    ray_connect_timeout_s: float = Field(
        10.0, gt=0, le=600, description="RAY_ADDRESS must answer within this"
    )


#: HTTP/2's client connection preface and an empty SETTINGS frame.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _check_address(address: str, timeout_s: float) -> None:
    """Fail fast, naming ``RAY_ADDRESS``, where ``ray.init`` would wait on a dead address."""
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"RAY_ADDRESS: {address!r} is not host:port or ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as conn:
            # Ray's head (GCS) and Ray Client speak gRPC: an HTTP/2 server answers the
            # connection preface with a SETTINGS frame. Anything else (a Redis, a web
            # server) would leave ray.init retrying for minutes.
            conn.sendall(_H2_PREFACE)
            reply = conn.recv(9)
    except OSError as exc:
        raise ServiceUnavailableError(
            f"RAY_ADDRESS: no Ray cluster answers at {address!r} within {timeout_s:.0f} s "
            f"({exc}); unset RAY_ADDRESS to start a local Ray"
        ) from None
    if len(reply) < 4 or reply[3] != 0x04:  # not an HTTP/2 SETTINGS frame
        raise ServiceUnavailableError(
            f"RAY_ADDRESS: {address!r} answers, but not as a Ray cluster (no gRPC); "
            "unset RAY_ADDRESS to start a local Ray"
        )


def connect(settings: BackfillEngineSettings) -> None:
    """``ray.init()``: the cluster at ``RAY_ADDRESS``, else a local Ray; reused if started."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        _check_address(address, settings.ray_connect_timeout_s)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is None:  # the machine's CPUs, and at least one per actor
        want = settings.ray_workers * max(1, settings.ray_cpus_per_worker)
        kwargs["num_cpus"] = max(want, os.cpu_count() or 1)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = ""
        if os.environ.get("RAY_AUTH_MODE") != "token":  # Ray >= 2.59's `ray start` default
            hint = (
                "; if the cluster uses token authentication (`ray start` does by default "
                "since Ray 2.59), set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or "
                "RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token)"
            )
        raise ServiceUnavailableError(
            f"RAY_ADDRESS: cannot join the Ray cluster at {address!r}: {exc}{hint}"
        ) from None
    where = f"cluster {address}" if address else f"local, {kwargs['num_cpus']} CPUs"
    log.info("ray: %s", where)


class RayBackfillFailed(RuntimeError):
    """A pass failed on Ray (a worker dead past its retries, a cluster gone): the job
    stops before writing any of the pass's rows, so no partial version is switched to."""


class _Towers:
    """One actor: the model version and the pass's inputs loaded once, then rows by index.

    Row ``k`` of the job is item ``k`` (its content row) for ``k < len(ids)``, else user
    window ``k - len(ids)``: both passes go through one pool, so each worker starts and
    loads the model once per backfill.
    """

    def __init__(
        self, registry_root: str, version: str, h: int, refs: list[Any], cpus: int
    ) -> None:
        import ray
        import torch

        from learn_core.registry import ModelRegistry
        from learn_core.serving import as_serving

        self.model = as_serving(version, ModelRegistry(registry_root).load(version))
        # The arrays come zero-copy (read-only) from the object store; a window is its
        # items' row numbers, so no item id is unpickled more than once.
        self.ids, self.content, self.flat, self.starts = ray.get(refs)
        self.by_id = dict(zip(self.ids, self.content, strict=True))
        self.h = h
        torch.set_num_threads(cpus)  # the CPUs Ray gave this actor, no more (nor fewer)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from learn_core.inference import USER_BATCH, embed_windows, encode_items

        idx = np.asarray(batch["data"], np.int64)
        n = len(self.ids)
        items, users = idx[idx < n], idx[idx >= n] - n
        parts = []
        if len(items):
            ids = [self.ids[k] for k in items]
            parts.append(encode_items(self.model, self.content[items], ids))
        for s in range(0, len(users), USER_BATCH):
            wins = [
                [self.ids[j] for j in self.flat[self.starts[k] : self.starts[k + 1]]]
                for k in users[s : s + USER_BATCH]
            ]
            parts.append(embed_windows(self.model.user_tower, wins, self.by_id, self.h))
        return {"id": np.concatenate([items, users + n]), "vector": np.concatenate(parts)}


def cpus_per_worker(s: BackfillEngineSettings) -> int:
    """``ray_cpus_per_worker``, or by default a local Ray's CPUs shared among the actors
    (one actor on a 2-CPU machine gets both, as the local pass's torch does); on a
    cluster 1, Ray's own default."""
    import ray

    if os.environ.get("RAY_ADDRESS"):  # (a cluster may scale up to the pool's need)
        return s.ray_cpus_per_worker or 1
    have = int(ray.cluster_resources().get("CPU", 1))
    cpus = s.ray_cpus_per_worker or max(1, have // s.ray_workers)
    if cpus * s.ray_workers > have:  # the pool would wait for CPUs forever
        raise ConfigError(
            f"LEARNREC_BACKFILL_RAY_WORKERS={s.ray_workers} x "
            f"LEARNREC_BACKFILL_RAY_CPUS_PER_WORKER={cpus} needs {cpus * s.ray_workers} "
            f"CPUs; the local Ray has {have}"
        )
    return cpus


@dataclass(frozen=True)
class PassJob:
    """What a pass's driver needs: the model version to load, its window and width."""

    root: str
    version: str
    h: int
    out_dim: int
    settings: BackfillEngineSettings


def run_pass(
    job: PassJob, item_ids: list[str], content: np.ndarray, flat: np.ndarray, starts: np.ndarray
) -> np.ndarray:
    """The pass in this process (Ray joined): item rows then user windows (``flat[starts[k]:
    starts[k + 1]]``, rows of ``content``) -> ``[rows, out_dim]`` vectors."""
    import ray
    import ray.data

    total = len(item_ids) + len(starts) - 1
    out = np.zeros((total, job.out_dim), np.float32)
    cpus = cpus_per_worker(job.settings)
    refs = [
        ray.put(list(item_ids)),
        ray.put(np.ascontiguousarray(content, np.float32)),
        ray.put(flat),
        ray.put(starts),
    ]
    with warnings.catch_warnings():
        # (Ray 2.60 names no parameter for an actor's restarts yet: passed through.)
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
        # The row numbers from the driver's memory: ray.data.range's read tasks would
        # wait for a CPU that the pool's actors hold (a hang on a 2-CPU Ray).
        rows = np.arange(total, dtype=np.int64)
        blocks = np.array_split(rows, max(1, -(-total // job.settings.ray_batch_rows)))
        # One block per batch: a block is one task, and tasks are what the pool's
        # actors share (one block would keep all but one actor idle).
        ds = ray.data.from_numpy(blocks).map_batches(
            _Towers,
            fn_constructor_args=(job.root, job.version, job.h, refs, cpus),
            batch_size=job.settings.ray_batch_rows,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=job.settings.ray_workers),
            num_cpus=cpus,
            # A dead worker is restarted and its batches re-run (rows are written by
            # the job afterwards, so nothing is written twice); bounded, never forever.
            max_restarts=job.settings.ray_max_retries,
            max_task_retries=job.settings.ray_max_retries,
        )
    seen = np.zeros(total, bool)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            out[batch["id"]] = batch["vector"]
            seen[batch["id"]] = True
    except ray.exceptions.RayError as exc:
        where = os.environ.get("RAY_ADDRESS") or "unset: a local Ray"
        raise RayBackfillFailed(
            f"the Ray backfill pass failed (RAY_ADDRESS {where}; a dead worker is retried "
            f"LEARNREC_BACKFILL_RAY_MAX_RETRIES={job.settings.ray_max_retries} times); nothing "
            f"of it was written: {type(exc).__name__}: {str(exc)[:500]}"
        ) from exc
    if not seen.all():  # never seen; a row lost must not become a zero vector
        raise RayBackfillFailed(f"the Ray pass returned {seen.sum()} of {total} rows")
    return out


class RayEngine:
    """``trainers.jobs.backfill.backfill``'s tower passes as one Ray Data job."""

    def __init__(
        self,
        registry_root: str,
        model: ServingModel,
        history_len: int,
        settings: BackfillEngineSettings | None = None,
    ) -> None:
        s = settings or BackfillEngineSettings()
        self.address = os.environ.get("RAY_ADDRESS") or None
        if self.address is None:
            connect(s)
        else:  # joined by the pass's own driver process (module doc); fail fast here
            _check_address(self.address, s.ray_connect_timeout_s)
        self.job = PassJob(registry_root, model.version, history_len, model.dim, s)

    def passes(
        self, item_ids: list[str], content: np.ndarray, windows: list[list[str]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Item vectors of ``content``'s rows and user vectors of ``windows`` (whose items
        are ``item_ids``), from one ``map_batches`` over an actor pool."""
        total = len(item_ids) + len(windows)
        if total == 0:
            empty = np.zeros((0, self.job.out_dim), np.float32)
            return empty, empty
        row = {i: k for k, i in enumerate(item_ids)}
        flat = np.fromiter((row[i] for w in windows for i in w), np.int64)
        starts = np.concatenate([[0], np.cumsum([len(w) for w in windows], dtype=np.int64)])
        if self.address is None:
            out = run_pass(self.job, list(item_ids), content, flat, starts)
        else:
            out = self._rows_in_child(list(item_ids), content, flat, starts)
        return out[: len(item_ids)], out[len(item_ids) :]

    def _rows_in_child(
        self, item_ids: list[str], content: np.ndarray, flat: np.ndarray, starts: np.ndarray
    ) -> np.ndarray:
        """``run_pass`` in a driver process of its own (module doc): its inputs and output as
        .npy files (no pickle), its failure as a message file, its death as an exit code."""
        with tempfile.TemporaryDirectory(prefix="learnrec-ray-pass-") as tmp:
            d = Path(tmp)
            np.save(d / "ids.npy", np.asarray(item_ids, dtype=str))
            np.save(d / "content.npy", np.ascontiguousarray(content, np.float32))
            np.save(d / "flat.npy", flat)
            np.save(d / "starts.npy", starts)
            # (vars, not asdict: asdict would deep-copy the settings only to replace them)
            job = vars(self.job) | {"settings": self.job.settings.model_dump()}
            (d / "job.json").write_text(json.dumps(job))
            code = subprocess.call(
                [sys.executable, "-m", "trainers.jobs.ray_backfill", str(d)],
                cwd=Path(__file__).resolve().parents[2],
            )
            if code == 0:
                return np.load(d / "out.npy")
            error = d / "error.json"
            if error.exists():  # raised in the child: the same error here
                kind, message = json.loads(error.read_text())
                raise {"ConfigError": ConfigError, "ServiceUnavailableError":
                       ServiceUnavailableError}.get(kind, RayBackfillFailed)(message)  # fmt: skip
        raise RayBackfillFailed(
            f"the Ray backfill pass's driver process ended with exit code {code} "
            f"(RAY_ADDRESS {self.address}: the cluster, or the node the driver was attached "
            "to, went away; Ray ends its driver then, see the cluster's python-core-driver "
            "log); nothing of the pass was written"
        )


def engine_from_settings(
    registry_root: str, model: ServingModel, history_len: int, engine: str | None = None
) -> RayEngine | None:
    """The engine ``LEARNREC_BACKFILL_ENGINE`` (or ``engine``) names; ``None``: local."""
    from learn_core.settings import load

    s = load(BackfillEngineSettings, **({"engine": engine} if engine else {}))
    if s.engine == "local":
        return None
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(
            "LEARNREC_BACKFILL_ENGINE=ray needs Ray: pip install -e '.[ray]'"
        ) from None
    return RayEngine(registry_root, model, history_len, s)


def _child(d: Path) -> int:
    """``python -m trainers.jobs.ray_backfill DIR``: the pass of ``RayEngine._rows_in_child``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s ray-driver %(levelname)s %(name)s: %(message)s"
    )
    spec = json.loads((d / "job.json").read_text())
    job = PassJob(**spec | {"settings": BackfillEngineSettings.model_validate(spec["settings"])})
    try:
        connect(job.settings)
        out = run_pass(
            job,
            np.load(d / "ids.npy").tolist(),
            np.load(d / "content.npy"),
            np.load(d / "flat.npy"),
            np.load(d / "starts.npy"),
        )
    except (ConfigError, ServiceUnavailableError, RayBackfillFailed) as exc:
        (d / "error.json").write_text(json.dumps([type(exc).__name__, str(exc)]))
        return 2
    np.save(d / "out.npy", out)
    return 0


if __name__ == "__main__":
    # By its real name, so that Ray pickles ``_Towers`` by reference, not as ``__main__``'s.
    from trainers.jobs.ray_backfill import _child as child

    sys.exit(child(Path(sys.argv[1])))
