"""A missing item holds its user at most ``held_max_s`` (issue 25, item 2).

The pure ``HoldTimer`` with an injected clock, then the handler with in-memory ports:
embedded without the item after the bound, reported once, re-embedded when it arrives,
and a user whose item never arrives is never frozen.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from learn_core.events import Interaction
from learn_core.history import Entry, UserHistory, to_ms
from learn_core.inference import recompute_users
from learn_core.serving import FixedTowers, bootstrap_tower
from streaming.consumer import Accepted
from streaming.dead_letter import SourceRef
from streaming.held_items import HoldTimer, Partial, partial_window
from streaming.interaction_consumer import InteractionConsumerSettings, InteractionHandler
from streaming.user_sinks import ContentLookup, MemoryHistoryStore, MemoryUserSink
from tests.unit.test_interaction_handler import CFG, T0, _content, _log

H = 6


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _hist(*items: str, start: int = 0) -> UserHistory:
    return UserHistory(
        tuple(Entry(1000 * (start + k), f"e{start + k}", i) for k, i in enumerate(items))
    )


# ----------------------------------------------------------------------------- pure core


def test_held_until_the_bound_then_partial_once() -> None:
    clock = Clock()
    t = HoldTimer(5.0, 100, clock)
    w = {"u": _hist("a", "x", "b")}
    held = {"u": frozenset({"x"})}
    d = t.decide(held, w)
    assert not d.partial and t.commit(d) == []
    clock.t += 4.9
    assert not t.decide(held, w).partial
    clock.t += 0.1
    d = t.decide(held, w)
    assert d.partial == {"u": Partial(("a", "b"), 2000, 1)}
    assert t.commit(d) == ["x"]
    # Written: the same window and missing set is not embedded again.
    clock.t += 100
    d = t.decide(held, w)
    assert not d.partial and not d.skipped and t.commit(d) == []


def test_uncommitted_decision_is_decided_again() -> None:
    """A failed write (no commit) leaves the user due: the retry embeds it."""
    clock = Clock()
    t = HoldTimer(1.0, 100, clock)
    w, held = {"u": _hist("x", "a")}, {"u": frozenset({"x"})}
    t.decide(held, w)
    clock.t += 1
    assert t.decide(held, w).partial  # the write fails: no commit
    d = t.decide(held, w)
    assert d.partial and t.commit(d) == ["x"]


def test_each_item_is_reported_once_over_users() -> None:
    clock = Clock()
    t = HoldTimer(0.0, 100, clock)
    held = {"u1": frozenset({"x"}), "u2": frozenset({"x", "y"})}
    w = {"u1": _hist("x", "a"), "u2": _hist("y", "x", "b")}
    d = t.decide(held, w)
    assert set(d.partial) == {"u1", "u2"}
    assert sorted(t.commit(d)) == ["x", "y"]
    w3 = {"u3": _hist("x", "c")}
    d = t.decide({**held, "u3": frozenset({"x"})}, {**w, **w3})
    assert set(d.partial) == {"u3"} and t.commit(d) == []


def test_a_changed_window_is_embedded_at_once_a_new_missing_item_waits() -> None:
    clock = Clock()
    t = HoldTimer(5.0, 100, clock)
    held = {"u": frozenset({"x"})}
    t.commit(t.decide(held, {"u": _hist("x")}))
    clock.t += 5
    t.commit(t.decide(held, {"u": _hist("x")}))  # nothing to embed: only the missing item
    # A new event on a known item: embedded now, without x (never frozen).
    d = t.decide(held, {"u": _hist("x", "a")})
    assert d.partial == {"u": Partial(("a",), 1000, 1)}
    t.commit(d)
    # A new missing item y starts a new wait of at most the bound.
    held2 = {"u": frozenset({"x", "y"})}
    w2 = {"u": _hist("x", "a", "y")}
    assert not t.decide(held2, w2).partial
    clock.t += 5
    d = t.decide(held2, w2)
    assert d.partial == {"u": Partial(("a",), 2000, 2)} and t.commit(d) == ["y"]
    # y arrives, x does not: embedded at once with y, still without x.
    d = t.decide({"u": frozenset({"x"})}, w2)
    assert d.partial == {"u": Partial(("a", "y"), 2000, 1)}
    t.commit(d)
    # Released (x arrived or left the window): forgotten.
    t.commit(t.decide({}, {}))
    assert len(t) == 0


def test_partial_event_times_order_by_what_they_read() -> None:
    """Fewer skipped events -> strictly newer, the full window newest of all, and all
    after the previous millisecond: stores that keep only newer rows keep each."""
    hist = _hist("x", "y", "a")
    both = partial_window(hist, frozenset({"x", "y"}))
    one = partial_window(hist, frozenset({"x"}))
    full_us = hist.latest_ms * 1000
    assert (hist.latest_ms - 1) * 1000 < both.event_us < one.event_us < full_us
    assert both.items == ("a",) and one.items == ("y", "a")


def test_the_recheck_list_is_bounded() -> None:
    clock = Clock()
    t = HoldTimer(0.0, 2, clock)
    w = {f"u{k}": _hist("x", f"i{k}") for k in range(5)}
    held = {u: frozenset({"x"}) for u in w}
    for k in range(2):  # skipped in this order: u0, u1
        t.commit(t.decide({f"u{j}": held[f"u{j}"] for j in range(k + 1)}, w))
    d = t.decide({u: held[u] for u in ("u0", "u1", "u2")}, w)
    assert set(d.partial) == {"u2"} and d.evict == ["u0"]  # the one skipped longest ago
    t.commit(d)
    assert len(t) == 2
    assert not t.decide({u: held[u] for u in ("u1", "u2")}, w).evict


# ------------------------------------------------------------------------------ handler


def _event(k: int, user: str, item: str) -> Accepted:
    ev = Interaction(
        event_id=f"e{k:05d}",
        user_id=user,
        item_id=item,
        event_type="click",
        occurred_at=T0 + timedelta(seconds=k),
    )
    return Accepted(ev, SourceRef("t", 0, k, 1_700_000_000_000 + k))


def _handler(
    sink: MemoryUserSink, store: MemoryHistoryStore, clock: Clock, max_users: int = 100
) -> InteractionHandler:
    s = InteractionConsumerSettings(
        history_len=H, reload_check_s=0, held_max_s=5, held_max_users=max_users
    )
    handler = InteractionHandler(
        FixedTowers(bootstrap_tower(CFG)),
        store,
        ContentLookup(sink.read_content, 1000, CFG.content_dim),
        sink,
        s,
    )
    handler.holds.clock = clock
    return handler


def _reference(sink: MemoryUserSink, handler: InteractionHandler) -> dict:
    assert handler.model is not None
    return recompute_users(_log(sink), sink.content, handler.model.tower, H)


def test_handler_embeds_without_missing_item_then_with_it(caplog: pytest.LogCaptureFixture) -> None:
    content = _content(6)
    late = content.pop("i5")
    sink, store, clock = MemoryUserSink(content), MemoryHistoryStore(), Clock()
    handler = _handler(sink, store, clock)
    handler([_event(k, "u", f"i{k}") for k in range(3)] + [_event(3, "u", "i5")])
    handler([_event(4, "v", "i5")])
    assert not sink.online and store.held_users == {"u", "v"}
    clock.t += 4.9
    handler([])
    assert not sink.online  # within the bound: held
    clock.t += 0.1
    with caplog.at_level(logging.WARNING, "streaming.interaction_consumer"):
        handler([])
        handler([])
    row = sink.online["u"]
    assert set(sink.online) == {"u"}  # v has no item with content: nothing to embed
    assert row["history_len"] == 3
    newest = to_ms(T0 + timedelta(seconds=3))
    assert pd.Timestamp(row["event_timestamp"]).value == newest * 1_000_000 - 1_000
    # The partial embedding is the batch function of the log without i5's events.
    log_without = _log(sink).query("item_id != 'i5'")
    ref = recompute_users(log_without, sink.content, handler.model.tower, H)  # type: ignore[union-attr]
    np.testing.assert_allclose(row["embedding"], ref["u"][0], atol=1e-5, rtol=0)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "'i5'" in warned[0].getMessage()
    assert handler.stats.embedded_without == 1 and handler.stats.missing_items == 1
    assert store.held_users == {"u", "v"}  # still re-checked; the window kept every event
    assert store.rows["u"].item_ids == ["i0", "i1", "i2", "i5"]

    # The item never arriving never freezes u: a new event is embedded at once.
    handler([_event(6, "u", "i4")])
    assert sink.online["u"]["history_len"] == 4

    # The item arrives: u and v are embedded with it and leave the held set.
    sink.content["i5"] = late
    handler([])
    assert not store.held_users and handler.stats.released_users == 2
    full = _reference(sink, handler)
    for u in ("u", "v"):
        np.testing.assert_allclose(sink.online[u]["embedding"], full[u][0], atol=1e-5, rtol=0)
        assert pd.Timestamp(sink.online[u]["event_timestamp"]).value // 1_000_000 == full[u][2]


def test_partial_write_failure_is_retried() -> None:
    content = _content(4)
    content.pop("i3")
    sink, store, clock = MemoryUserSink(content), MemoryHistoryStore(), Clock()
    handler = _handler(sink, store, clock)
    handler([_event(0, "u", "i0"), _event(1, "u", "i3")])
    clock.t += 5
    sink.fail_writes = True
    with pytest.raises(ConnectionError):
        handler([])
    sink.fail_writes = False
    handler([])
    assert sink.online["u"]["history_len"] == 1 and handler.stats.embedded_without == 1


def test_handler_drops_users_skipped_longest_ago_from_the_recheck_list() -> None:
    content = _content(4)
    content.pop("i3")
    sink, store, clock = MemoryUserSink(content), MemoryHistoryStore(), Clock()
    handler = _handler(sink, store, clock, max_users=1)
    handler([_event(0, "u", "i0"), _event(1, "u", "i3")])
    clock.t += 5
    handler([])
    handler([_event(2, "v", "i1"), _event(3, "v", "i3")])
    clock.t += 5
    handler([])
    assert set(sink.online) == {"u", "v"} and store.held_users == {"v"}
    assert store.rows["u"].item_ids == ["i0", "i3"]  # its window is kept
