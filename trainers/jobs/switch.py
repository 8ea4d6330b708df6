"""Serve a backfilled version with no gap while the consumers keep writing.

A consumer learns of a new pointer only at its next check, so rows it wrote after the
last tail replay but before it saw the switch existed only under the old version: for
a few seconds after the switch those items read ``unknown`` and those users older
(issue 25). ``switch`` marks the version pending first, and the consumers write it too
(``ModelCache.writing``, ``streaming.tower_versions``: the pending version's rows first).
After ``wait_s``, longer than every consumer's check period, each of them does; a last
replay of the logs' tail covers what they wrote before, its users are checked against
the serving version's rows (``repair_users``), then the pointer switches and the mark
goes. Why dual write rather than a fence: docs/deploy.md, "Switch during streaming".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from feature_repo.schema import INTERACTION_LOG, USER_TOWER
from learn_core.inference import user_tower_rows
from learn_core.serving import as_serving
from trainers.jobs.backfill import TAIL_PASSES, catch_up, latest_content, write_rows

if TYPE_CHECKING:
    from feature_repo.store import FeatureStoreHandle
    from learn_core.registry import ModelRegistry
    from learn_core.serving import ServingModel


def switch(
    handle: FeatureStoreHandle,
    registry: ModelRegistry,
    model: ServingModel,
    *,
    since: datetime,
    wait_s: float,
    history_len: int = 50,
) -> int:
    """Serve ``model.version`` (backfilled, its tail replayed up to ``since``) with no gap.

    Returns the rows the last replay and its check wrote. ``PENDING`` is cleared on the
    way out, after ``CURRENT`` (writers read ``PENDING`` first), and on failure.
    """
    current = registry.current_version()
    against = None
    if current is not None and current != model.version:
        against = as_serving(current, registry.load(current))
    registry.mark_pending(model.version)
    try:
        time.sleep(wait_s)
        written: list[str] = []
        fixed, _ = catch_up(handle, model, since=since, history_len=history_len, written=written)
        if against is not None and written:
            content = latest_content(handle, model)
            fixed += repair_users(handle, model, against, written, content, history_len)
        registry.promote(model.version)  # atomic pointer switch
    finally:
        registry.clear_pending()
    return fixed


def repair_users(
    handle: FeatureStoreHandle,
    model: ServingModel,
    against: ServingModel,
    users: list[str],
    content: dict[str, np.ndarray],
    history_len: int,
) -> int:
    """Rewrite the ``users`` whose row of ``model`` is not their newest window's.

    Why: while consumers write both versions, a consumer's newer row can land between a
    replay's check and its write, and SQLite keeps the last write (in whole seconds, so
    event times cannot tell the two apart). A consumer writes both versions from one
    window: where the serving version's row (``against``) is that of the user's newest
    logged window, the candidate's row must be too, and is rewritten if it is not. A user
    whose serving row is not (yet) that window is the consumers' to write. Up to
    ``TAIL_PASSES`` passes, each on a fresh read of the log.
    """
    fixed = 0
    for _ in range(TAIL_PASSES):
        if not users:
            break
        log_df = handle.read_offline(INTERACTION_LOG.name)
        when = datetime.now(UTC)
        want, _, stamps = user_tower_rows(
            model, log_df, content, history_len, when, users=set(users), partial=True
        )
        ref = user_tower_rows(
            against, log_df, content, history_len, when, users=set(users), partial=True
        ).rows
        ids = list(want["user_id"])
        if not ids:
            break
        served = handle.read_embeddings(USER_TOWER.name, ids, model_version=against.version)
        mine = handle.read_embeddings(USER_TOWER.name, ids, model_version=model.version)
        written = served.found & _close(served.vectors, np.stack(ref["embedding"]))
        stale = written & ~(mine.found & _close(mine.vectors, np.stack(want["embedding"])))
        keep = np.flatnonzero(stale)
        if not len(keep):
            break
        write_rows(
            handle,
            USER_TOWER.name,
            want.iloc[keep],
            online_ts=stamps.iloc[keep].reset_index(drop=True),
        )
        fixed += len(keep)
        users = [ids[k] for k in keep]
    return fixed


def _close(a: np.ndarray, b: np.ndarray, atol: float = 1e-5) -> np.ndarray:
    """Row by row: the same vector (the streaming and batch paths agree to 1e-5)."""
    if a.shape != b.shape:
        return np.zeros(len(a), dtype=bool)
    return np.abs(a - b).max(axis=1, initial=0.0) <= atol
