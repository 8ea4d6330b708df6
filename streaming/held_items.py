"""How long a missing item may hold its user, and who is embedded without it meanwhile.

A user whose window holds an item without content is *held* (``learn_core.history``):
their embedding waits for the item. ``HoldTimer`` bounds that wait. After ``max_s``
the user is embedded from their window with the missing items' events skipped (a
*partial* embedding); the stored window keeps every event, and the user stays on the
held re-check list, so when an item arrives they are embedded again with it.

* The bound is per user: ``max_s`` from the moment the user first waits on an item the
  last partial embedding did not already skip. A user already embedded without ``X``
  whose window changes (a new event, or an item arrived while another is still missing)
  is embedded at once; a new missing item starts a new wait of at most ``max_s``.
* Each item is reported once when it is first skipped (``new_missing``, an LRU of
  reported items), not once per event or per user.
* The list of users embedded without an item is bounded (``max_users``): beyond it the
  users skipped longest ago leave the re-check list (``evict``); their next event
  re-checks them.

Pure: no Kafka, Feast or torch; the clock is injected so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from learn_core.history import PARTIAL_MAX_SHIFT_US, Entry, UserHistory

#: A partial embedding's event time is the window's newest event time less one
#: microsecond per skipped event (at most 999, so it stays after the previous
#: millisecond): an embedding that reads more of the same window is strictly newer, so
#: the stores keep it (Redis keeps only a newer row; the offline log keys by time).
MAX_SHIFT_US = PARTIAL_MAX_SHIFT_US


@dataclass(frozen=True)
class Partial:
    """A held user's window with the events of its missing items skipped."""

    items: tuple[str, ...]  # items that have content, oldest first
    newest_ms: int  # newest event time of the whole stored window
    skipped: int  # events skipped

    @property
    def event_us(self) -> int:
        return self.newest_ms * 1000 - min(self.skipped, MAX_SHIFT_US)


def partial_window(hist: UserHistory, missing: frozenset[str]) -> Partial:
    keep = tuple(e.item_id for e in hist.entries if e.item_id not in missing)
    return Partial(keep, hist.latest_ms, len(hist.entries) - len(keep))


_State = tuple[tuple[Entry, ...], frozenset[str]]  # a window and the items it lacks


@dataclass
class HoldDecision:
    """``partial``: users to embed now without their missing items (an empty window
    is not embedded); ``evict``: users to drop from the held re-check list (over
    ``max_users``). Nothing is final until ``HoldTimer.commit``, after the writes."""

    partial: dict[str, Partial] = field(default_factory=dict)
    evict: list[str] = field(default_factory=list)
    skipped: dict[str, _State] = field(default_factory=dict)


@dataclass
class _Hold:
    since: float | None  # when the user began to wait on an item not skipped yet
    written: _State | None = None  # what the last partial embedding skipped, and where


class HoldTimer:
    """Per-consumer state of the held users it owns (in memory: a restart gives each
    held user one more wait of at most ``max_s``)."""

    def __init__(
        self,
        max_s: float,
        max_users: int,
        clock: Callable[[], float] = time.monotonic,
        reported_items: int = 100_000,
    ) -> None:
        self.max_s = max_s
        self.max_users = max_users
        self.clock = clock
        self._users: OrderedDict[str, _Hold] = OrderedDict()  # oldest partial first
        self._reported: OrderedDict[str, None] = OrderedDict()
        self._reported_cap = reported_items

    def __len__(self) -> int:
        return len(self._users)

    def decide(
        self, held: Mapping[str, frozenset[str]], windows: Mapping[str, UserHistory]
    ) -> HoldDecision:
        """``held``: every held user this consumer owns now, with the items it lacks;
        ``windows``: their stored windows. Users no longer held are forgotten."""
        now = self.clock()
        out = HoldDecision()
        for user in [u for u in self._users if u not in held]:
            del self._users[user]  # released, its item left the window, or moved away
        for user, missing in held.items():
            st = self._users.get(user)
            if st is None:
                st = self._users[user] = _Hold(since=now)
            hist = windows[user]
            state = (hist.entries, missing)
            if st.written == state:
                continue  # this partial embedding is written already
            if st.written is not None and missing <= st.written[1]:
                st.since = None  # nothing new to wait for: the window changed, or an item came
            elif st.since is None:
                st.since = now
            if st.since is not None and now - st.since < self.max_s:
                continue
            out.skipped[user] = state
            part = partial_window(hist, missing)
            if part.items:
                out.partial[user] = part
        if len(self._users) > self.max_users:
            old = [
                u
                for u, st in self._users.items()
                if st.written is not None and u not in out.skipped
            ]
            over = len(old) + len(out.skipped) - self.max_users
            out.evict = old[: max(0, over)]
        return out

    def commit(self, decision: HoldDecision) -> list[str]:
        """Record a decision whose writes succeeded; return the items skipped for the
        first time (to report once each)."""
        new: list[str] = []
        for user, state in decision.skipped.items():
            st = self._users[user]
            st.since, st.written = None, state
            self._users.move_to_end(user)
            new.extend(i for i in sorted(state[1]) if self._report(i))
        for user in decision.evict:
            self._users.pop(user, None)
        return new

    def _report(self, item: str) -> bool:
        if item in self._reported:
            self._reported.move_to_end(item)
            return False
        self._reported[item] = None
        if len(self._reported) > self._reported_cap:
            self._reported.popitem(last=False)
        return True
