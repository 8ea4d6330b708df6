"""The pure user-history core: windows are a set function of the events."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from learn_core.events import Interaction
from learn_core.history import (
    Entry,
    UserHistory,
    entry_of,
    group_by_user,
    merge_entries,
    pad_windows,
    plan_batch,
    to_ms,
    windows_from_log,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _events(n: int, users: int = 5, items: int = 20, seed: int = 0) -> list[Interaction]:
    rng = random.Random(seed)
    return [
        Interaction(
            event_id=f"e{k:05d}",
            user_id=f"u{rng.randrange(users)}",
            item_id=f"i{rng.randrange(items)}",
            event_type="view",
            occurred_at=T0 + timedelta(milliseconds=rng.randrange(10_000_000)),
        )
        for k in range(n)
    ]


def _stream(events: list[Interaction], h: int, cuts: list[int]) -> dict[str, UserHistory]:
    """Feed ``events`` in batches split at ``cuts`` through ``plan_batch``."""
    state: dict[str, UserHistory] = {}
    bounds = [0, *cuts, len(events)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        batch = group_by_user((e, 0) for e in events[a:b])
        plan = plan_batch(state, batch, {}, lambda i: True, h)
        state.update(plan.histories)
    return state


def test_merge_keeps_latest_h_in_time_order() -> None:
    es = [Entry(t, f"e{t}", f"i{t}") for t in (5, 1, 9, 3, 7)]
    assert merge_entries([], es, 3) == (es[0], es[4], es[2])  # t = 5, 7, 9
    assert merge_entries(es[:2], es[2:], 10) == tuple(sorted(es))


def test_merge_dedups_by_event_id_and_is_idempotent() -> None:
    a = Entry(1, "e1", "i1")
    b = Entry(2, "e2", "i2")
    once = merge_entries([], [a, b], 5)
    assert merge_entries(once, [a, b, a], 5) == once
    # The same event id with a different payload keeps one entry, whatever the order.
    a2 = Entry(3, "e1", "i9")
    assert merge_entries([a], [a2], 5) == merge_entries([a2], [a], 5) == (a,)


@pytest.mark.parametrize("seed", range(5))
def test_window_independent_of_batching_order_and_replay(seed: int) -> None:
    events = _events(400, seed=seed)
    h = 7
    rng = random.Random(seed)
    reference = _stream(events, h, [])
    cuts = sorted(rng.sample(range(1, 400), 12))
    assert _stream(events, h, cuts) == {u: UserHistory(v.entries, 0) for u, v in reference.items()}
    shuffled = events[:]
    rng.shuffle(shuffled)
    replayed = shuffled + shuffled[:150]  # a crash re-delivers a prefix
    got = _stream(replayed, h, sorted(rng.sample(range(1, len(replayed)), 20)))
    assert {u: v.entries for u, v in got.items()} == {u: v.entries for u, v in reference.items()}


def test_windows_from_log_matches_streaming() -> None:
    events = _events(300, seed=3)
    h = 6
    streamed = _stream(events, h, [50, 51, 200])
    log = pd.DataFrame(
        {
            "event_id": [e.event_id for e in events] + [events[0].event_id],  # a duplicate
            "user_id": [e.user_id for e in events] + [events[0].user_id],
            "item_id": [e.item_id for e in events] + [events[0].item_id],
            "event_timestamp": [e.occurred_at for e in events] + [events[0].occurred_at],
        }
    )
    batch = windows_from_log(log, h)
    assert {u: v.entries for u, v in batch.items()} == {u: v.entries for u, v in streamed.items()}


def test_to_ms_is_exact() -> None:
    t = datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    assert to_ms(t) == 1704067200123
    ev = Interaction(event_id="e", user_id="u", item_id="i", event_type="view", occurred_at=t)
    assert entry_of(ev).t_ms == 1704067200123


def test_json_round_trip() -> None:
    h = UserHistory((Entry(1, "e1", "i1"), Entry(2, 'e"2', "i\u00e92")), partition=3)
    assert UserHistory.from_json(h.to_json()) == h


def test_plan_holds_missing_items_and_releases_them() -> None:
    ev = _events(30, users=2, items=5, seed=1)
    batch = group_by_user((e, 1) for e in ev)
    absent = {"i3"}
    plan = plan_batch({}, batch, {}, lambda i: i not in absent, 10)
    windows = {u: h.item_ids for u, h in plan.histories.items()}
    held_users = {u for u, w in windows.items() if "i3" in w}
    assert held_users, "the seed should put i3 in some window"
    assert set(plan.held) == held_users
    assert all(m == frozenset({"i3"}) for m in plan.held.values())
    assert set(plan.ready) == set(windows) - held_users
    assert plan.held_interactions == len(held_users)

    # Next batch: nothing new, but i3 has arrived -> the held users are released.
    state = dict(plan.histories)
    held_before = {u: state[u] for u in plan.held}
    plan2 = plan_batch(state, {}, held_before, lambda i: True, 10)
    assert set(plan2.ready) == held_users and not plan2.held
    assert set(plan2.histories) == held_users  # re-stored so the hold flag is cleared


def test_unchanged_user_is_not_rewritten() -> None:
    ev = _events(20, users=1, seed=2)
    batch = group_by_user((e, 0) for e in ev)
    first = plan_batch({}, batch, {}, lambda i: True, 50)
    again = plan_batch(first.histories, batch, {}, lambda i: True, 50)
    assert again.ready == [] and again.histories == {}


def test_pad_windows_fixed_width_left_aligned() -> None:
    content = {"a": np.ones(3, np.float32), "b": np.full(3, 2, np.float32)}
    x, mask = pad_windows([["a", "b"], [], ["b", "a", "b"]], content, 2, 3)
    assert x.shape == (3, 2, 3) and mask.tolist() == [[True, True], [False, False], [True, True]]
    assert x[2, :, 0].tolist() == [1.0, 2.0]  # the last h items of a longer window


def test_one_padder_keeps_the_last_h_left_aligned() -> None:
    from learn_core.history import pad_ids, pad_windows

    ids = pad_ids([np.array([1, 2, 3, 4]), np.array([7]), np.array([], np.int64)], 3)
    assert ids.tolist() == [[2, 3, 4], [7, -1, -1], [-1, -1, -1]]
    rng = np.random.default_rng(0)
    content = {f"i{n}": rng.standard_normal(4).astype(np.float32) for n in range(6)}
    windows = [["i0", "i1", "i2", "i3"], ["i5"], []]
    x, mask = pad_windows(windows, content, 3, 4)
    assert mask.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    # The plain path: row by row, position by position.
    for b, w in enumerate(windows):
        for p, item in enumerate(w[-3:]):
            np.testing.assert_array_equal(x[b, p], content[item])
    assert not x[~mask].any()


def test_window_rows_index_each_distinct_item_once() -> None:
    from learn_core.history import pad_windows, window_rows

    rng = np.random.default_rng(1)
    content = {f"i{n}": rng.standard_normal(4).astype(np.float32) for n in range(5)}
    windows = [["i0", "i1", "i0", "i3"], ["i1"], [], ["i4", "i4"]]
    matrix, ids = window_rows(windows, content, 3, 4)
    assert matrix.shape == (4, 4)  # i1, i0, i3, i4: each once
    x, mask = pad_windows(windows, content, 3, 4)
    assert ((ids >= 0) == mask).all()
    np.testing.assert_array_equal(matrix[ids[mask]], x[mask])
    empty, none = window_rows([[], []], content, 3, 4)
    assert empty.shape == (0, 4) and (none == -1).all()
