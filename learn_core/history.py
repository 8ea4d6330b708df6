"""Pure user-history state: the last H interactions of a user, and what a batch changes.

A user's history is defined as a function of the *set* of their interactions: the H
latest by ``(occurred_at, event_id)``, one entry per ``event_id``. Merging a batch is
``top_H(old ∪ batch)``, and because ``top_H(top_H(S) ∪ T) == top_H(S ∪ T)`` the result
does not depend on batch boundaries, arrival order or replays. That is what makes the
consumer idempotent by ``event_id`` and lets a batch job recompute the same windows
from the offline interaction log (``windows_from_log``).

Late items: an embedding is only computed from a window whose items all have content
embeddings. A window with a missing item is *held*: the user keeps their previous
embedding until the item arrives (or the interaction leaves the window), so every
written embedding is exactly the batch function of the log at its event time. The
consumer bounds the hold (``streaming.held_items``): after ``held_max_s`` it embeds the
window with the missing items' events skipped, and again with them when they arrive.

No Kafka, Feast or torch here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd

from learn_core.events import Interaction

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_US = timedelta(microseconds=1)


class Entry(NamedTuple):
    """One interaction as the history keeps it; ordering is the window's time order.

    A tuple, not a dataclass: a batch creates one per event and the merge sorts them,
    and tuple construction and comparison run in C.
    """

    t_ms: int
    event_id: str
    item_id: str


#: A *partial* embedding (a window read without its items that have no content) is
#: stamped with the window's newest event time less one microsecond per skipped event,
#: at most this many: an embedding that reads more of the same window is strictly newer,
#: so the stores keep it (``streaming.held_items``; the backfill's partial rows).
PARTIAL_MAX_SHIFT_US = 999


@dataclass(frozen=True)
class UserHistory:
    """A user's window (oldest first) plus where their events come from.

    ``partition`` is the Kafka partition of the user's latest event: only the consumer
    that owns that partition re-checks a held user, so two consumers never race on one
    user after a rebalance.
    """

    entries: tuple[Entry, ...] = ()
    partition: int = -1

    @property
    def item_ids(self) -> list[str]:
        return [e.item_id for e in self.entries]

    @property
    def latest_ms(self) -> int:
        return self.entries[-1].t_ms if self.entries else 0

    def __len__(self) -> int:
        return len(self.entries)

    def to_json(self) -> str:
        rows = [[e.t_ms, e.event_id, e.item_id] for e in self.entries]
        return json.dumps({"p": self.partition, "e": rows}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> UserHistory:
        obj = json.loads(text)
        return cls(tuple(Entry(int(t), str(e), str(i)) for t, e, i in obj["e"]), int(obj["p"]))


def merge_entries(old: Iterable[Entry], new: Iterable[Entry], h: int) -> tuple[Entry, ...]:
    """``top_h(old ∪ new)`` with one entry per event id (the smallest, so order-free)."""
    by_id: dict[str, Entry] = {}
    for e in (*old, *new):
        cur = by_id.get(e.event_id)
        if cur is None or e < cur:
            by_id[e.event_id] = e
    return tuple(sorted(by_id.values())[-h:]) if h > 0 else ()


def to_ms(t: datetime) -> int:
    """Exact integer milliseconds since the epoch (floats would round some values)."""
    return (t - _EPOCH) // _MS


def to_us(t: datetime) -> int:
    """Exact integer microseconds since the epoch."""
    return (t - _EPOCH) // _US


def entry_of(event: Interaction) -> Entry:
    return Entry(to_ms(event.occurred_at), event.event_id, event.item_id)


@dataclass
class BatchPlan:
    """What one micro-batch does to the user state.

    ``histories``: the new state of every user whose window changed;
    ``ready``: users whose (changed or newly resolved) window is fully resolved, to embed;
    ``held``: users whose window lacks content for the given items.
    """

    histories: dict[str, UserHistory] = field(default_factory=dict)
    ready: list[str] = field(default_factory=list)
    held: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def held_interactions(self) -> int:
        return sum(len(v) for v in self.held.values())


def group_by_user(events: Iterable[tuple[Interaction, int]]) -> dict[str, list[tuple[Entry, int]]]:
    """(event, partition) pairs -> user -> [(entry, partition)] in arrival order."""
    out: dict[str, list[tuple[Entry, int]]] = {}
    for ev, part in events:
        out.setdefault(ev.user_id, []).append((entry_of(ev), part))
    return out


def plan_batch(
    old: Mapping[str, UserHistory],
    batch: Mapping[str, list[tuple[Entry, int]]],
    held_before: Mapping[str, UserHistory],
    has_content: Callable[[str], bool],
    h: int,
) -> BatchPlan:
    """Merge a batch into the stored histories and decide who is embedded or held.

    ``old``: stored histories of the batch's users (absent = new user);
    ``held_before``: stored histories of held users this consumer owns, re-checked
    against ``has_content`` so that a late item releases them.
    A user whose window did not change and was not held is left alone: a replayed
    batch writes nothing again.
    """
    plan = BatchPlan()
    candidates: dict[str, UserHistory] = {}
    for user, rows in batch.items():
        prev = old.get(user, UserHistory())
        merged = merge_entries(prev.entries, (e for e, _ in rows), h)
        part = rows[-1][1]
        if merged != prev.entries or user in held_before:
            new = UserHistory(merged, part)
            plan.histories[user] = new
            candidates[user] = new
    for user, hist in held_before.items():
        candidates.setdefault(user, hist)
    for user, hist in candidates.items():
        missing = frozenset(i for i in hist.item_ids if not has_content(i))
        if missing:
            plan.held[user] = missing
        elif hist.entries:
            plan.ready.append(user)
            plan.histories.setdefault(user, hist)  # a released user's state drops its hold
    plan.ready.sort()
    return plan


def pad_ids(seqs: Sequence[Sequence[int] | np.ndarray], h: int, fill: int = -1) -> np.ndarray:
    """The one history padder: the last ``h`` of each sequence, left-aligned, ``[B, h]`` int64.

    Positions after a short sequence hold ``fill``. Serving (``pad_windows``), the
    offline evaluation and the CVR stage all read histories through it, so a model is
    scored on exactly the window layout it is served with.
    """
    out = np.full((len(seqs), h), fill, dtype=np.int64)
    if h <= 0:
        return out
    for b, seq in enumerate(seqs):
        tail = seq[-h:]
        out[b, : len(tail)] = tail
    return out


def pad_windows(
    windows: list[list[str]], content: Mapping[str, np.ndarray], h: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Item windows -> ``([B, h, dim] float32, [B, h] bool)``, left-aligned, fixed width ``h``.

    A fixed width means the streaming path and the batch recomputation run the tower
    on identically shaped rows, whatever else is in the batch.
    """
    matrix, ids = window_rows(windows, content, h, dim)
    mask = ids >= 0
    x = np.zeros((len(windows), h, dim), dtype=np.float32)
    x[mask] = matrix[ids[mask]]
    return x, mask


def window_rows(
    windows: list[list[str]], content: Mapping[str, np.ndarray], h: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Item windows -> ``([U, dim] float32, [B, h] int64)``: each distinct item's content
    once, and the windows as row indices into it (-1 = padding), laid out as
    ``pad_windows``. The tower's per-item work then runs once per distinct item."""
    matrix, ids, _ = keyed_window_rows(windows, content, h, dim)
    return matrix, ids


def keyed_window_rows(
    windows: list[list[str]], content: Mapping[str, np.ndarray], h: int, dim: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``window_rows`` and the item id of each row of the matrix (for towers with ID rows)."""
    rows: dict[str, int] = {}
    ids = pad_ids([[rows.setdefault(i, len(rows)) for i in w[-h:]] for w in windows], h)
    if not rows:
        return np.zeros((0, dim), np.float32), ids, []
    matrix = np.stack([np.asarray(content[i], dtype=np.float32) for i in rows])
    return matrix, ids, list(rows)


def windows_from_log(log: pd.DataFrame, h: int) -> dict[str, UserHistory]:
    """The reference path: every user's window recomputed from the interaction log.

    ``log`` has ``event_id, user_id, item_id, event_timestamp`` (the offline
    ``interaction_log``). Same definition as the streaming merge, no incremental state.
    """
    if log.empty:
        return {}
    ts = pd.to_datetime(log["event_timestamp"], utc=True).astype("datetime64[ms, UTC]")
    df = pd.DataFrame(
        {
            "t_ms": ts.astype("int64").to_numpy(),
            "event_id": log["event_id"].astype(str).to_numpy(),
            "item_id": log["item_id"].astype(str).to_numpy(),
            "user_id": log["user_id"].astype(str).to_numpy(),
        }
    )
    df = df.sort_values(["event_id", "t_ms", "item_id"]).drop_duplicates("event_id")
    df = df.sort_values(["user_id", "t_ms", "event_id", "item_id"])
    out: dict[str, UserHistory] = {}
    for user, g in df.groupby("user_id", sort=False):
        tail = g.tail(h)
        entries = tuple(
            Entry(int(t), e, i)
            for t, e, i in zip(tail["t_ms"], tail["event_id"], tail["item_id"], strict=True)
        )
        out[str(user)] = UserHistory(entries)
    return out
