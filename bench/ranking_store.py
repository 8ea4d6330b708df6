"""The throwaway Feast project the ranking benchmarks read: filled, torn down, named by commit.

Shared by ``bench.ranking`` (in process) and ``bench.http_ranking`` (over HTTP), so that
both read the same vectors of the same shape from the same kind of store.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.schema import ITEM_TOWER, USER_TOWER
from feature_repo.settings import FeastSettings
from learn_core.settings import ConfigError, load

log = logging.getLogger(__name__)

SERVICES = Path(__file__).resolve().parents[1] / ".ci" / "services.sh"
VERSION = "bench-v1"


def production_settings(project: str, data_dir: Path) -> FeastSettings | None:
    """Production settings from the environment or ``.ci/services.sh env``; None if absent."""
    env = {k: v for k, v in os.environ.items() if k.startswith("LEARNREC_FEAST_")}
    if "LEARNREC_FEAST_PG_PASSWORD" not in env and SERVICES.exists():
        out = subprocess.run(
            ["bash", str(SERVICES), "env"], capture_output=True, text=True, check=False
        ).stdout
        for line in out.splitlines():
            if line.startswith("export "):
                k, _, v = line[len("export ") :].partition("=")
                env.setdefault(k, v.strip("'\""))
    if "LEARNREC_FEAST_PG_PASSWORD" not in env:
        return None
    fields = {k[len("LEARNREC_FEAST_") :].lower(): v for k, v in env.items()}
    fields = {k: v for k, v in fields.items() if k in FeastSettings.model_fields}
    fields.update(profile="production", project=project, data_dir=data_dir)
    try:
        return load(FeastSettings, **fields)
    except ConfigError as exc:
        log.warning("production profile skipped: %s", exc)
        return None


def _unit(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(
    handle: Any, n_items: int, n_users: int, dim: int, seed: int, version: str = VERSION
) -> tuple[list, list]:
    """Unit item- and user-tower vectors of one version, online; returns (items, users)."""
    rng = np.random.default_rng(seed)
    now = pd.Timestamp(datetime.now(UTC))
    items = [f"i{n:06d}" for n in range(n_items)]
    users = [f"u{n:05d}" for n in range(n_users)]
    handle.write_online(
        ITEM_TOWER.name,
        pd.DataFrame(
            {
                "item_id": items,
                "embedding": list(_unit(n_items, dim, rng)),
                "model_version": version,
                "event_timestamp": now,
            }
        ),
    )
    handle.write_online(
        USER_TOWER.name,
        pd.DataFrame(
            {
                "user_id": users,
                "embedding": list(_unit(n_users, dim, rng)),
                "model_version": version,
                "history_len": np.int64(10),
                "event_timestamp": now,
            }
        ),
    )
    return items, users


def cleanup(handle: Any) -> None:
    """Remove the throwaway project: online rows, offline tables and, on PostgreSQL, its
    rows in the shared SQL registry (left there, every later store on that database
    would read them at each refresh: ``feature_repo.store.forget_project``)."""
    from feature_repo.store import forget_project

    store = handle.store
    views = list(handle.definitions.views.values())
    store._get_provider().teardown_infra(store.project, views, handle.definitions.entities)
    if handle.settings.profile == "production":
        from feature_repo.schema import LOGS

        for name in LOGS:
            handle.offline.drop(name)
    handle.close()
    forget_project(handle.settings)


def machine() -> dict[str, Any]:
    """The ``machine`` entry of a benchmark's JSON, at its start (``write_result`` adds
    ``loadavg_end`` when it ends)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": list(os.getloadavg()),
    }


def write_result(out: Path, result: dict[str, Any]) -> None:
    """Stamp ``result["machine"]`` with the load average at the end, and write the JSON."""
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


def git_commit() -> str | None:
    out = subprocess.run(
        ["git", "-C", str(SERVICES.parents[1]), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or None
