"""Backfill: item and user embeddings of one model version into Feast (offline, then online).

Items: the latest content embedding of every item in the offline content log, through
the version's item tower. Users: every user's window rebuilt from the offline
interaction log (``learn_core.inference.user_tower_rows``, the same definition the
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
from tqdm import tqdm

from feature_repo.schema import INTERACTION_LOG, ITEM_CONTENT, ITEM_TOWER, USER_TOWER
from learn_core.contract import ContentMismatch
from learn_core.inference import item_tower_rows, latest_per_item, latest_vectors, user_tower_rows

if TYPE_CHECKING:
    import pandas as pd

    from feature_repo.store import FeatureStoreHandle
    from learn_core.serving import ServingModel

log = logging.getLogger(__name__)


@dataclass
class BackfillResult:
    version: str
    items: int
    users: int
    users_skipped: int
    seconds: float


def latest_content(
    handle: FeatureStoreHandle, model: ServingModel | None = None
) -> dict[str, np.ndarray]:
    """Every item's newest content vector from the offline log.

    Given ``model``, refuses (``ContentMismatch``) when any of those vectors was made by
    another content model than the one ``model`` was trained on: its towers would read
    them as if they meant what its training vectors meant.
    """
    latest = latest_per_item(handle.read_offline(ITEM_CONTENT.name))
    if model is not None and model.content_model is not None and not latest.empty:
        other = latest.loc[latest["model_version"] != model.content_model, "model_version"]
        if len(other):
            seen = other.value_counts()
            raise ContentMismatch(
                f"model {model.version} was trained on content model {model.content_model!r}, "
                f"but {len(other)} of {len(latest)} items in the store have content vectors of "
                f"{dict(seen.head(3))}; re-embed the items or retrain on the store's content"
            )
    return latest_vectors(latest)


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
    content = latest_content(handle, model)
    ids = sorted(content)
    for s in tqdm(range(0, len(ids), 4096), desc="backfill items", disable=not progress):
        chunk = ids[s : s + 4096]
        rows = item_tower_rows(model, chunk, np.stack([content[i] for i in chunk]), when)
        _write(handle, ITEM_TOWER.name, rows)
    log_df = handle.read_offline(INTERACTION_LOG.name)
    users, skipped = user_tower_rows(model, log_df, content, history_len, when, progress=progress)
    _write(handle, USER_TOWER.name, users)
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
    content = latest_content(handle, model)
    ids = sorted(content)
    fixed = 0
    if ids:
        got = handle.read_embeddings(ITEM_TOWER.name, ids)
        stale = [i for i, v in zip(got.ids, got.model_version, strict=True) if v != model.version]
        if stale:
            rows = item_tower_rows(model, stale, np.stack([content[i] for i in stale]), when)
            _write(handle, ITEM_TOWER.name, rows)
            fixed += len(stale)
    log_df = handle.read_offline(INTERACTION_LOG.name)
    if not log_df.empty:
        all_users = sorted(set(log_df["user_id"]))
        got = handle.read_embeddings(USER_TOWER.name, all_users)
        stale_users = {
            u for u, v in zip(got.ids, got.model_version, strict=True) if v != model.version
        }
        if stale_users:
            rows, _ = user_tower_rows(model, log_df, content, history_len, when, users=stale_users)
            _write(handle, USER_TOWER.name, rows)
            fixed += len(rows)
    if fixed:
        log.info("catch-up %s: re-embedded %d rows written by other versions", model.version, fixed)
    return fixed
