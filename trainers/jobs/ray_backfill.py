"""The backfill's tower passes on Ray Data: ``map_batches`` over an actor pool.

``learnrec run-job backfill --engine ray`` (or ``LEARNREC_BACKFILL_ENGINE=ray``) runs
``trainers.jobs.backfill.backfill`` with a ``RayEngine``: the job still reads the logs,
rebuilds the windows and writes every row through the same feature-store writers, so the
blue/green rules hold as on the local path; only the tower passes (item content -> item
vectors, user windows -> user vectors) run as Ray Data jobs. Each actor loads the model
version once from the registry, and the content vectors once from Ray's object store.

``ray.init()`` starts a local Ray (``ray_workers`` CPUs) unless ``RAY_ADDRESS`` names a
cluster; an address that does not answer fails at once, naming ``RAY_ADDRESS``.
"""

from __future__ import annotations

import logging
import os
import socket
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
    ray_batch_rows: int = Field(1024, ge=1, le=1_000_000, description="rows per map_batches batch")
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
    if address is None:
        kwargs["num_cpus"] = settings.ray_workers
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ServiceUnavailableError(
            f"RAY_ADDRESS: cannot join the Ray cluster at {address!r}: {exc}"
        ) from None
    where = f"cluster {address}" if address else f"local, {settings.ray_workers} CPUs"
    log.info("ray: %s", where)


class RayBackfillFailed(RuntimeError):
    """A pass failed on Ray (a worker dead past its retries, a cluster gone): the job
    stops before writing any of the pass's rows, so no partial version is switched to."""


class _Towers:
    """One actor: the model version loaded once, then one tower pass per batch."""

    def __init__(self, registry_root: str, version: str, content: list[Any]) -> None:
        import ray

        from learn_core.registry import ModelRegistry
        from learn_core.serving import as_serving

        self.model = as_serving(version, ModelRegistry(registry_root).load(version))
        self.content = ray.get(content[0]) if content else {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from learn_core.inference import embed_windows, encode_items

        ids = [str(i) for i in batch["id"]]
        if "content" in batch:  # items
            vecs = encode_items(self.model, np.asarray(batch["content"], np.float32), ids)
        else:  # users: each window's item ids
            wins = [[str(i) for i in w] for w in batch["window"]]
            h = int(batch["h"][0])
            vecs = embed_windows(self.model.user_tower, wins, self.content, h)
        return {"id": np.asarray(ids, dtype=object), "vector": vecs}


class RayEngine:
    """``trainers.jobs.backfill.backfill``'s tower passes as Ray Data jobs."""

    def __init__(
        self,
        registry_root: str,
        model: ServingModel,
        history_len: int,
        settings: BackfillEngineSettings | None = None,
    ) -> None:
        self.s = settings or BackfillEngineSettings()
        connect(self.s)
        self.root, self.version, self.h = registry_root, model.version, history_len
        self.rows_per_pass = 1_000_000  # one Ray job for a catalogue's items, up to 1M rows

    def _run(self, rows: list[dict[str, Any]], content: list[Any]) -> dict[str, np.ndarray]:
        import ray.data

        ds = ray.data.from_items(rows).map_batches(
            _Towers,
            fn_constructor_args=(self.root, self.version, content),
            batch_size=self.s.ray_batch_rows,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.s.ray_workers),
            # A dead worker is restarted and its batches re-run (rows are written by the
            # job afterwards, so nothing is written twice); bounded, never retried forever.
            max_restarts=self.s.ray_max_retries,
            max_task_retries=self.s.ray_max_retries,
        )
        try:
            return {str(r["id"]): np.asarray(r["vector"], np.float32) for r in ds.iter_rows()}
        except ray.exceptions.RayError as exc:
            where = os.environ.get("RAY_ADDRESS") or "unset: a local Ray"
            raise RayBackfillFailed(
                f"the Ray backfill pass failed (RAY_ADDRESS {where}; a dead worker is retried "
                f"LEARNREC_BACKFILL_RAY_MAX_RETRIES={self.s.ray_max_retries} times); nothing "
                f"of it was written: {type(exc).__name__}: {str(exc)[:500]}"
            ) from exc

    def encode(self, item_ids: list[str], content: np.ndarray) -> np.ndarray:
        rows = [{"id": i, "content": c} for i, c in zip(item_ids, content, strict=True)]
        out = self._run(rows, [])
        return np.stack([out[i] for i in item_ids])

    def embed(self, windows: list[list[str]], content: dict[str, np.ndarray]) -> np.ndarray:
        """User vectors of ``windows``; ``content`` reaches each actor once (object store)."""
        import ray

        keys = [f"u{n}" for n in range(len(windows))]
        rows = [{"id": k, "window": w, "h": self.h} for k, w in zip(keys, windows, strict=True)]
        out = self._run(rows, [ray.put(content)])
        return np.stack([out[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)


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
