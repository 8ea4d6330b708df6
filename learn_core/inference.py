"""Batched inference with a served model: user windows and item content -> tower vectors.

One definition, used by every stage: the interaction consumer embeds changed windows,
the item consumer embeds new items, the retraining job evaluates and backfills, and the
reference paths the tests compare against rebuild users from the offline log. Rows are
built in the layout of the ``feature_repo.schema`` views.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import pandas as pd
from tqdm import tqdm

from learn_core.history import (
    PARTIAL_MAX_SHIFT_US,
    UserHistory,
    keyed_window_rows,
    windows_from_log,
)

if TYPE_CHECKING:
    from learn_core.models.towers import UserTower
    from learn_core.serving import ServingModel


def embed_windows(
    tower: UserTower, windows: list[list[str]], content: dict[str, np.ndarray], h: int
) -> np.ndarray:
    """One batched forward: item windows -> ``[B, out_dim]`` float32 user embeddings.

    The tower gets each distinct item's content once and its id (a tower with ID rows,
    the content-anchored hybrid's, adds the item's learned correction by it).
    """
    import torch

    if not windows:
        return np.zeros((0, tower.cfg.out_dim), np.float32)
    matrix, ids, keys = keyed_window_rows(windows, content, h, tower.cfg.content_dim)
    with torch.inference_mode():
        out = tower.encode_rows(torch.from_numpy(matrix), torch.from_numpy(ids), keys)
    return out.numpy().astype(np.float32, copy=False)


def encode_items(
    model: ServingModel,
    content: np.ndarray,
    item_ids: list[str] | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """``[n, content_dim]`` content vectors -> ``[n, out_dim]`` float32 item-tower vectors.

    ``item_ids`` names the rows: a model with ID rows adds the learned correction of the
    items it was trained on; without ids (or for an item it never saw) content alone.
    """
    import torch

    if content.shape[1] != model.content_dim:
        raise ValueError(f"content dim {content.shape[1]} != model's {model.content_dim}")
    with torch.inference_mode():
        out = model.item_tower.encode_items(
            torch.from_numpy(np.ascontiguousarray(content, dtype=np.float32)),
            batch_size,
            item_ids=item_ids,
        )
    return out.numpy().astype(np.float32, copy=False)


def _utc(when: datetime) -> pd.Timestamp:
    t = pd.Timestamp(when)
    return t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC")


class TowerEngine(Protocol):
    """Where a batch job's tower passes run (``trainers.jobs.ray_backfill``: Ray workers).

    One call does both passes, so that an engine with a start-up cost (a worker pool, a
    model load per worker) pays it once: item content rows -> item vectors, and user
    windows (over the same items) -> user vectors.
    """

    def passes(
        self, item_ids: list[str], content: np.ndarray, windows: list[list[str]]
    ) -> tuple[np.ndarray, np.ndarray]: ...


def item_tower_rows(
    model: ServingModel,
    item_ids: list[str],
    content: np.ndarray | None,
    when: datetime,
    vectors: np.ndarray | None = None,
) -> pd.DataFrame:
    """Rows of the ``item_tower_embedding`` view for ``item_ids`` (pure but for torch).

    ``vectors``: the tower pass already run elsewhere (a ``TowerEngine``); else
    ``encode_items`` over ``content`` here.
    """
    if vectors is None:
        assert content is not None
        vectors = encode_items(model, content, item_ids)
    return pd.DataFrame(
        {
            "item_id": item_ids,
            "embedding": list(vectors),
            "model_version": model.version,
            "event_timestamp": _utc(when),
            "created": pd.Timestamp(datetime.now(UTC)),
        }
    )


def latest_per_item(content_log: pd.DataFrame) -> pd.DataFrame:
    """The newest row of each item in an offline ``item_content_embedding`` frame."""
    if content_log.empty:
        return content_log
    return content_log.sort_values("event_timestamp", kind="stable").drop_duplicates(
        "item_id", keep="last"
    )


def latest_vectors(content_log: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each item's newest content vector in an offline ``item_content_embedding`` frame."""
    df = latest_per_item(content_log)
    if df.empty:
        return {}
    return {
        i: np.asarray(v, np.float32) for i, v in zip(df["item_id"], df["embedding"], strict=True)
    }


def ready_windows(
    interaction_log: pd.DataFrame,
    content: dict[str, np.ndarray],
    h: int,
    users: Iterable[str] | None = None,
) -> tuple[dict[str, UserHistory], list[str]]:
    """Every user's window rebuilt from the log, and the users whose items all have content.

    The batch definition the streaming merge must agree with (``windows_from_log``); a
    window with an item lacking content is left out, as the consumer holds it.
    """
    wins = windows_from_log(interaction_log, h)
    if users is not None:
        keep = set(users)
        wins = {u: w for u, w in wins.items() if u in keep}
    ready = [u for u, w in wins.items() if all(i in content for i in w.item_ids)]
    return wins, ready


class UserRows(NamedTuple):
    """``user_tower_rows``' answer: the rows, how many users wait for content, and each
    row's newest event time (the stamp the interaction consumer gives the same row)."""

    rows: pd.DataFrame
    waiting: int
    latest_event: pd.Series


#: Users per tower forward in a batch pass: on CPU a larger forward is slower per user
#: (4,096 windows in one took 2x the time of 512s; ``trainers.jobs.ray_backfill``).
USER_BATCH = 512


class UserWindows(NamedTuple):
    """The windows a user pass embeds: ``items[u]`` for each ``u`` of ``order``, the
    stamp each row gets (µs), and how many users wait for content."""

    order: list[str]
    items: dict[str, list[str]]
    stamp_us: dict[str, int]
    waiting: int


def user_windows(
    interaction_log: pd.DataFrame,
    content: dict[str, np.ndarray],
    h: int,
    users: set[str] | None = None,
    partial: bool = False,
) -> UserWindows:
    """Every ready user's window from the log (``user_tower_rows``' first half)."""
    wins, ready = ready_windows(interaction_log, content, h, users)
    items = {u: wins[u].item_ids for u in ready}
    stamp_us = {u: wins[u].latest_ms * 1000 for u in ready}
    if partial:
        for u, w in wins.items():
            have = [i for i in w.item_ids if i in content]
            if u not in items and have:
                items[u] = have
                skipped = len(w.item_ids) - len(have)
                stamp_us[u] = w.latest_ms * 1000 - min(skipped, PARTIAL_MAX_SHIFT_US)
    return UserWindows(list(items), items, stamp_us, len(wins) - len(items))


def user_rows_of(
    model: ServingModel, wins: UserWindows, vectors: np.ndarray, when: datetime
) -> UserRows:
    """``user_tower_embedding`` rows of ``wins`` given their vectors (the second half)."""
    order = wins.order
    out = pd.DataFrame(
        {
            "user_id": order,
            "embedding": list(vectors) if order else [],
            "model_version": model.version,
            "history_len": np.asarray([len(wins.items[u]) for u in order], np.int64),
            "event_timestamp": pd.Timestamp(when),
            "created": pd.Timestamp(datetime.now(UTC)),
        }
    )
    latest = np.asarray([wins.stamp_us[u] for u in order], dtype="int64")
    return UserRows(out, wins.waiting, pd.Series(pd.to_datetime(latest, unit="us", utc=True)))


def user_tower_rows(
    model: ServingModel,
    interaction_log: pd.DataFrame,
    content: dict[str, np.ndarray],
    h: int,
    when: datetime,
    users: set[str] | None = None,
    batch: int = USER_BATCH,
    progress: bool = False,
    partial: bool = False,
) -> UserRows:
    """``user_tower_embedding`` rows of every ready user (or of ``users``), stamped ``when``.

    ``partial``: a user whose window holds items without content is embedded without
    them, as the interaction consumer does after ``held_max_s`` (``streaming.held_items``:
    the event time less 1 µs per skipped event, ``history_len`` the items read), so that a
    new version has a row for every user the serving one has; only users with no item
    content at all wait. ``batch`` users go through the tower at a time.
    """
    wins = user_windows(interaction_log, content, h, users, partial)
    order = wins.order
    vecs = [
        embed_windows(model.user_tower, [wins.items[u] for u in order[s : s + batch]], content, h)
        for s in tqdm(range(0, len(order), batch), desc="backfill users", disable=not progress)
    ]
    return user_rows_of(model, wins, np.concatenate(vecs) if vecs else np.zeros((0, 0)), when)


def recompute_users(
    interaction_log: pd.DataFrame,
    content: dict[str, np.ndarray],
    tower: UserTower,
    h: int,
) -> dict[str, tuple[np.ndarray, int, int]]:
    """The batch reference path: user -> (embedding, history_len, event time ms).

    Rebuilds each window from the offline interaction log and embeds users one at a
    time; the streaming path must agree with it (``tests/.../test_interaction_*``).
    """
    wins, ready = ready_windows(interaction_log, content, h)
    return {
        u: (
            embed_windows(tower, [wins[u].item_ids], content, h)[0],
            len(wins[u]),
            wins[u].latest_ms,
        )
        for u in ready
    }
