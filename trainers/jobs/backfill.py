"""Backfill: item and user embeddings of one model version into Feast (offline, then online).

Items: the latest content embedding of every item in the offline content log, through
the version's item tower. Users: every user's window rebuilt from the offline
interaction log (``learn_core.inference.user_tower_rows``, the same definition the
streaming consumer keeps), through the version's user tower.

Blue/green: the online rows go under the candidate's version-qualified keys
(``feature_repo.online.versions``), beside the serving version's rows, which the
consumers keep writing; nothing the serving version reads changes until the pointer
switch. The candidate is caught up before the switch by replaying the offline logs'
tail: rows appended (``created``) after a watermark taken before each read
(``catch_up``). ``trainers.jobs.switch`` then marks it pending, so that the consumers
write it too (dual write), waits until every consumer has re-read the pointers, replays
the tail one last time and switches: no row written before the switch is missing or
older under the new version after it. ``purge_retired`` removes a replaced version's
rows once its grace period is over.

Stamps: item rows carry the backfill time; a user's *online* row carries the event time
of the newest event in its window, the stamp the interaction consumer gives the same
row. So on Redis, which drops a write not newer than the stored row, a consumer write
for any newer event wins over the backfill's row, however late it is processed. The
offline user rows keep the backfill time (the log's key is (user, event time): a row per
version must not collide with the consumer's row for the same window).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from feature_repo.schema import CREATED_TS, INTERACTION_LOG, ITEM_CONTENT, ITEM_TOWER, USER_TOWER
from learn_core.contract import ContentMismatch
from learn_core.inference import (
    UserRows,
    item_tower_rows,
    latest_per_item,
    latest_vectors,
    user_rows_of,
    user_tower_rows,
    user_windows,
)

if TYPE_CHECKING:
    from feature_repo.store import FeatureStoreHandle
    from learn_core.inference import TowerEngine
    from learn_core.registry import ModelRegistry
    from learn_core.serving import ServingModel

log = logging.getLogger(__name__)


#: How far before a read its watermark lies: a writer stamps ``created`` before its
#: append is durable, so a row may land in the log a little after a read that missed it.
SLACK = timedelta(seconds=30)
#: Tail replays before the switch (each one is shorter than the one before).
TAIL_PASSES = 3


@dataclass
class BackfillResult:
    version: str
    items: int
    users: int
    users_skipped: int
    seconds: float
    #: rows re-embedded by the tail replays before the switch
    caught_up: int = 0
    #: ISO time: log rows created after it may be missing (the next ``catch_up``'s ``since``)
    watermark: str = ""


def latest_content(
    handle: FeatureStoreHandle,
    model: ServingModel | None = None,
    content_log: pd.DataFrame | None = None,
) -> dict[str, np.ndarray]:
    """Every item's newest content vector from the offline log.

    Given ``model``, refuses (``ContentMismatch``) when any of those vectors was made by
    another content model than the one ``model`` was trained on: its towers would read
    them as if they meant what its training vectors meant.
    """
    if content_log is None:
        content_log = handle.read_offline(ITEM_CONTENT.name)
    latest = latest_per_item(content_log)
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


def write_rows(
    handle: FeatureStoreHandle,
    view: str,
    rows: pd.DataFrame,
    chunk: int = 2000,
    online_ts: pd.Series | None = None,
) -> None:
    """Offline, then online; ``online_ts`` replaces ``event_timestamp`` in the online rows."""
    for s in range(0, len(rows), chunk):
        part = rows.iloc[s : s + chunk]
        handle.append_offline(view, part)
        if online_ts is not None:
            part = part.assign(event_timestamp=online_ts.iloc[s : s + chunk].to_numpy())
        handle.write_online(view, part)


def backfill(
    handle: FeatureStoreHandle,
    model: ServingModel,
    *,
    history_len: int = 50,
    progress: bool = False,
    when: datetime | None = None,
    engine: TowerEngine | None = None,
) -> BackfillResult:
    """Write every item's and user's embedding under ``model.version``, then replay the tail.

    Safe while ``model.version``'s rows serve nothing: other versions' rows are not touched.
    ``engine`` runs both full tower passes elsewhere, in one job (``trainers.jobs.
    ray_backfill``); the rows are written here, by the same writers, and the short tail
    replays run here.
    """
    t0 = time.monotonic()
    when = when or datetime.now(UTC)
    mark = datetime.now(UTC) - SLACK
    content_log = handle.read_offline(ITEM_CONTENT.name)
    content = latest_content(handle, model, content_log)
    ids = sorted(content)
    if engine is None:
        write_item_rows(handle, model, ids, content, when, progress=progress)
        log_df = handle.read_offline(INTERACTION_LOG.name)
        # Users waiting for an item are embedded without it, as the consumer does after
        # its hold: the new version then has a row for every user the serving one has.
        users, skipped, latest = user_tower_rows(
            model, log_df, content, history_len, when, progress=progress, partial=True
        )
    else:
        log_df = handle.read_offline(INTERACTION_LOG.name)
        users, skipped, latest = _engine_passes(handle, model, engine, ids, content, log_df,
                                                history_len, when)  # fmt: skip
    write_rows(handle, USER_TOWER.name, users, online_ts=latest)
    seen = Seen()
    seen.add(content_log, log_df)
    caught = 0
    for _ in range(TAIL_PASSES):
        n, mark = catch_up(handle, model, since=mark, history_len=history_len, seen=seen)
        caught += n
        if n == 0:
            break
    res = BackfillResult(
        model.version,
        len(ids),
        len(users),
        skipped,
        time.monotonic() - t0,
        caught_up=caught,
        watermark=mark.isoformat(),
    )
    log.info(
        "backfill %s: %d items, %d users (%d without any item content), %d caught up, in %.1fs",
        res.version,
        res.items,
        res.users,
        res.users_skipped,
        res.caught_up,
        res.seconds,
    )
    return res


#: Item rows embedded and written per step (bounds the memory of a step).
ITEM_CHUNK = 4096


def write_item_rows(
    handle: FeatureStoreHandle,
    model: ServingModel,
    ids: list[str],
    content: dict[str, np.ndarray],
    when: datetime,
    vectors: np.ndarray | None = None,
    progress: bool = False,
) -> None:
    """``ids``' item-tower rows, ``ITEM_CHUNK`` at a time: embedded here, or ``vectors``
    (row for row with ``ids``) computed elsewhere."""
    for s in tqdm(range(0, len(ids), ITEM_CHUNK), desc="backfill items", disable=not progress):
        chunk = ids[s : s + ITEM_CHUNK]
        if vectors is None:
            rows = item_tower_rows(model, chunk, np.stack([content[i] for i in chunk]), when)
        else:
            rows = item_tower_rows(model, chunk, None, when, vectors[s : s + ITEM_CHUNK])
        write_rows(handle, ITEM_TOWER.name, rows)


def _engine_passes(
    handle: FeatureStoreHandle,
    model: ServingModel,
    engine: TowerEngine,
    ids: list[str],
    content: dict[str, np.ndarray],
    log_df: pd.DataFrame,
    history_len: int,
    when: datetime,
) -> UserRows:
    """Both tower passes in one call of ``engine`` (one worker pool, one model load per
    worker); the item rows are written here, the user rows returned."""
    wins = user_windows(log_df, content, history_len, partial=True)
    matrix = np.stack([content[i] for i in ids]) if ids else np.zeros((0, model.content_dim))
    item_vecs, user_vecs = engine.passes(ids, matrix, [wins.items[u] for u in wins.order])
    write_item_rows(handle, model, ids, content, when, item_vecs)
    return user_rows_of(model, wins, user_vecs, when)


@dataclass
class Seen:
    """Log rows a backfill has already embedded: content (item, event time), event ids."""

    content: set[tuple[str, int]] = field(default_factory=set)
    events: set[str] = field(default_factory=set)

    @staticmethod
    def _content_keys(df: pd.DataFrame) -> list[tuple[str, int]]:
        ts = pd.to_datetime(df["event_timestamp"], utc=True).astype("int64")
        return list(zip(df["item_id"].astype(str), ts, strict=True))

    def add(self, content_log: pd.DataFrame, log_df: pd.DataFrame) -> None:
        if not content_log.empty:
            self.content.update(self._content_keys(content_log))
        if not log_df.empty:
            self.events.update(log_df["event_id"].astype(str))

    def new_content(self, df: pd.DataFrame) -> pd.DataFrame:
        if df.empty or not self.content:
            return df
        return df[[k not in self.content for k in self._content_keys(df)]]

    def new_events(self, df: pd.DataFrame) -> pd.DataFrame:
        if df.empty or not self.events:
            return df
        return df[~df["event_id"].astype(str).isin(self.events)]


def _since(df: pd.DataFrame, since: datetime) -> pd.DataFrame:
    """Rows appended at or after ``since`` (rows without ``created`` count as new)."""
    if df.empty or CREATED_TS not in df.columns:
        return df
    created = pd.to_datetime(df[CREATED_TS], utc=True)
    return df[created.isna() | (created >= pd.Timestamp(since))]


def _as_utc(ts: datetime | None) -> pd.Timestamp | None:
    if ts is None:
        return None
    t = pd.Timestamp(ts)
    return t.tz_localize(UTC) if t.tzinfo is None else t.tz_convert(UTC)


def catch_up(
    handle: FeatureStoreHandle,
    model: ServingModel,
    *,
    since: datetime,
    history_len: int = 50,
    seen: Seen | None = None,
    written: list[str] | None = None,
) -> tuple[int, datetime]:
    """Replay the logs' tail since ``since`` under ``model.version``; (rows written, next mark).

    Items whose content row was appended since ``since`` are re-embedded; so are users
    with an interaction appended since then, or whose window holds such an item (a user
    held for a late item). A user's row is written only when the store has none of this
    version or an older one: once the consumers run this version they may already have
    written a newer window. ``seen`` (the backfill's passes): rows already embedded are
    skipped, and the rows of this pass are added. ``written`` collects the users whose
    rows this replay wrote (``trainers.jobs.switch`` checks them again).
    """
    mark = datetime.now(UTC) - SLACK
    when = datetime.now(UTC)
    seen = seen or Seen()
    content_log = handle.read_offline(ITEM_CONTENT.name)
    fresh = seen.new_content(_since(content_log, since))
    new_items = set(fresh["item_id"]) if not fresh.empty else set()
    content = latest_content(handle, model, content_log)
    fixed = 0
    items = sorted(i for i in new_items if i in content)
    if items:
        write_item_rows(handle, model, items, content, when)
        fixed += len(items)
    log_df = handle.read_offline(INTERACTION_LOG.name)
    if not log_df.empty:
        tail = seen.new_events(_since(log_df, since))
        users = set(tail["user_id"])
        if new_items:
            users |= set(log_df.loc[log_df["item_id"].isin(new_items), "user_id"])
        if users:
            wrote = _newer_users(handle, model, log_df, content, users, history_len, when)
            fixed += len(wrote)
            if written is not None:
                written.extend(wrote)
    seen.add(content_log, log_df)
    if fixed:
        log.info("catch-up %s: %d rows from the logs' tail since %s", model.version, fixed, since)
    return fixed, mark


def _stamps(
    handle: FeatureStoreHandle, version: str, users: list[str]
) -> list[pd.Timestamp | None]:
    have = handle.read_embeddings(USER_TOWER.name, users, model_version=version)
    return [
        _as_utc(t) if f else None for t, f in zip(have.event_timestamp, have.found, strict=True)
    ]


def _newer_users(
    handle: FeatureStoreHandle,
    model: ServingModel,
    log_df: pd.DataFrame,
    content: dict[str, np.ndarray],
    users: set[str],
    history_len: int,
    when: datetime,
) -> list[str]:
    """Write ``users``' rows from the log where the store has none of ``model``'s version or
    an older one; return the users written."""
    rows, _, stamps = user_tower_rows(
        model, log_df, content, history_len, when, users=users, partial=True
    )
    if not len(rows):
        return []
    stored = _stamps(handle, model.version, list(rows["user_id"]))
    keep = [r for r, t in enumerate(stored) if t is None or t < stamps.iloc[r]]
    if keep:
        write_rows(
            handle,
            USER_TOWER.name,
            rows.iloc[keep],
            online_ts=stamps.iloc[keep].reset_index(drop=True),
        )
    return [str(u) for u in rows["user_id"].iloc[keep]]


def purge_retired(
    handle: FeatureStoreHandle,
    registry: ModelRegistry,
    grace_s: float,
    now: datetime | None = None,
) -> list[str]:
    """Delete the online rows of versions retired more than ``grace_s`` ago; return them.

    The grace period lets replicas that have not re-read the pointer yet, and requests
    in flight, finish on the old version. A version's rows are found through the offline
    logs: the tower logs (every item-tower write and the serving version's user rows),
    and, for the user rows consumers wrote while it was pending (whose offline key is the
    serving version's row), every user of the interaction log.
    """
    now = now or datetime.now(UTC)
    current = registry.current_version()
    due = [
        v
        for v, t in registry.retired().items()
        if v != current and (now - t).total_seconds() >= grace_s
    ]
    users: set[str] = set()
    if due and not (inter := handle.read_offline(INTERACTION_LOG.name)).empty:
        users = set(inter["user_id"])
    for v in due:
        n = 0
        for view, key in ((ITEM_TOWER.name, "item_id"), (USER_TOWER.name, "user_id")):
            df = handle.read_offline(view)
            ids = set(df.loc[df["model_version"] == v, key]) if not df.empty else set()
            ids |= users if view == USER_TOWER.name else set()
            n += handle.online.purge_version(view, v, sorted(ids))
        log.info("purged the online rows of retired version %s (%d keys)", v, n)
    if due:
        registry.forget_retired(due)
    return due
