"""Backfill: item and user embeddings of one model version into Feast (offline, then online).

Items: the latest content embedding of every item in the offline content log, through
the version's item tower. Users: every user's window rebuilt from the offline
interaction log (``streaming.history.windows_from_log``, the same definition the
streaming consumer keeps), through the version's user tower. Rows are stamped with the
version and with the backfill time as ``event_timestamp``.

``catch_up`` re-embeds the entities whose online row is still of another version:
writers running the previous model (the interaction consumer until its next reload,
the item-tower sink) may overwrite backfilled rows between the backfill and the switch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from ranking.item_tower import (
    ITEM_CONTENT_VIEW,
    ITEM_TOWER_VIEW,
    USER_TOWER_VIEW,
    item_tower_rows,
)

if TYPE_CHECKING:
    from feature_repo.store import FeatureStoreHandle
    from ranking.models import ServingModel

log = logging.getLogger(__name__)

INTERACTION_LOG = "interaction_log"


@dataclass
class BackfillResult:
    version: str
    items: int
    users: int
    users_skipped: int
    seconds: float


def latest_content(handle: FeatureStoreHandle) -> dict[str, np.ndarray]:
    """Every item's newest content vector from the offline log."""
    df = handle.read_offline(ITEM_CONTENT_VIEW)
    if df.empty:
        return {}
    df = df.sort_values("event_timestamp", kind="stable").drop_duplicates("item_id", keep="last")
    return {
        i: np.asarray(v, np.float32) for i, v in zip(df["item_id"], df["embedding"], strict=True)
    }


def user_rows(
    model: ServingModel,
    interaction_log: pd.DataFrame,
    content: dict[str, np.ndarray],
    h: int,
    when: datetime,
    users: set[str] | None = None,
    batch: int = 512,
    progress: bool = False,
) -> tuple[pd.DataFrame, int]:
    """User-tower rows for every user (or ``users``) whose window has all its content."""
    from streaming.history import windows_from_log
    from streaming.interaction_consumer import embed_windows

    wins = windows_from_log(interaction_log, h)
    if users is not None:
        wins = {u: w for u, w in wins.items() if u in users}
    ready = [u for u, w in wins.items() if all(i in content for i in w.item_ids)]
    skipped = len(wins) - len(ready)
    vecs = []
    for s in tqdm(range(0, len(ready), batch), desc="backfill users", disable=not progress):
        chunk = ready[s : s + batch]
        vecs.append(embed_windows(model.user_tower, [wins[u].item_ids for u in chunk], content, h))
    out = pd.DataFrame(
        {
            "user_id": ready,
            "embedding": list(np.concatenate(vecs)) if vecs else [],
            "model_version": model.version,
            "history_len": np.asarray([len(wins[u]) for u in ready], np.int64),
            "event_timestamp": pd.Timestamp(when),
            "created": pd.Timestamp(datetime.now(UTC)),
        }
    )
    return out, skipped


def _write(handle: FeatureStoreHandle, view: str, rows: pd.DataFrame, chunk: int = 2000) -> None:
    for s in range(0, len(rows), chunk):
        part = rows.iloc[s : s + chunk]
        handle.append_offline(view, part)
        handle.write_online(view, part)


def backfill(
    handle: FeatureStoreHandle,
    model: ServingModel,
    *,
    history_len: int = 50,
    progress: bool = False,
    when: datetime | None = None,
) -> BackfillResult:
    """Write every item's and user's embedding under ``model.version``."""
    t0 = time.monotonic()
    when = when or datetime.now(UTC)
    content = latest_content(handle)
    ids = sorted(content)
    for s in tqdm(range(0, len(ids), 4096), desc="backfill items", disable=not progress):
        chunk = ids[s : s + 4096]
        rows = item_tower_rows(model, chunk, np.stack([content[i] for i in chunk]), when)
        _write(handle, ITEM_TOWER_VIEW, rows)
    log_df = handle.read_offline(INTERACTION_LOG)
    users, skipped = user_rows(model, log_df, content, history_len, when, progress=progress)
    _write(handle, USER_TOWER_VIEW, users)
    res = BackfillResult(model.version, len(ids), len(users), skipped, time.monotonic() - t0)
    log.info(
        "backfill %s: %d items, %d users (%d waiting for content) in %.1fs",
        res.version,
        res.items,
        res.users,
        res.users_skipped,
        res.seconds,
    )
    return res


def catch_up(handle: FeatureStoreHandle, model: ServingModel, *, history_len: int = 50) -> int:
    """Re-embed entities whose online row is of another version; returns how many."""
    when = datetime.now(UTC)
    content = latest_content(handle)
    ids = sorted(content)
    fixed = 0
    if ids:
        got = handle.read_embeddings(ITEM_TOWER_VIEW, ids)
        stale = [i for i, v in zip(got.ids, got.model_version, strict=True) if v != model.version]
        if stale:
            rows = item_tower_rows(model, stale, np.stack([content[i] for i in stale]), when)
            _write(handle, ITEM_TOWER_VIEW, rows)
            fixed += len(stale)
    log_df = handle.read_offline(INTERACTION_LOG)
    if not log_df.empty:
        all_users = sorted(set(log_df["user_id"]))
        got = handle.read_embeddings(USER_TOWER_VIEW, all_users)
        stale_users = {
            u for u, v in zip(got.ids, got.model_version, strict=True) if v != model.version
        }
        if stale_users:
            rows, _ = user_rows(model, log_df, content, history_len, when, users=stale_users)
            _write(handle, USER_TOWER_VIEW, rows)
            fixed += len(rows)
    if fixed:
        log.info("catch-up %s: re-embedded %d rows written by other versions", model.version, fixed)
    return fixed
