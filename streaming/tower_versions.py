"""The user towers the interaction consumer writes with: the current one and a pending one.

The registry's ``CURRENT`` version is the one served. While a retrain switches versions,
``PENDING`` names the next one (``ModelRegistry.mark_pending``) and the consumer writes
each user's row under both, the pending version's first, so that no user written before
the switch is missing or older under the new version after it (docs/deploy.md, "Switch
during streaming"). Both pointers are re-read at most every ``check_s``, pending first:
the switch writes ``CURRENT`` and then clears ``PENDING``, so a check that finds no
pending version finds the new current one.
"""

from __future__ import annotations

import logging
import time

from learn_core.serving import LoadedTower, ModelSource, as_tower, pending_of

log = logging.getLogger(__name__)


def window_problem(model: LoadedTower, keep: int) -> str | None:
    """Why ``model`` cannot be served its own window when the consumer keeps ``keep``
    items per user (None: it can). Its user rows would then differ from the backfill's,
    which embeds the model's window."""
    if model.history_len is None or model.history_len <= keep:
        return None
    return (
        f"LEARNREC_INTERACTION_CONSUMER_HISTORY_LEN={keep} keeps fewer items per user than "
        f"model {model.version} reads (history_len {model.history_len} in its serving "
        f"contract): set it to at least {model.history_len}"
    )


class ServedTowers:
    """The current tower and, during a switch, the pending one, from a ``ModelSource``."""

    def __init__(self, source: ModelSource, keep: int, check_s: float) -> None:
        self.source = source
        self.keep = keep
        self.check_s = check_s
        self.current: LoadedTower | None = None
        self.pending: LoadedTower | None = None
        self._checked = -float("inf")
        self._loaded: dict[str, LoadedTower] = {}
        self._refused: set[str] = set()

    def refresh(self, force: bool = False) -> bool:
        """Re-read the pointers when ``check_s`` has passed; True when the current
        version changed (the caller re-checks its content lookup)."""
        now = time.monotonic()
        if not force and self.current is not None and now - self._checked < self.check_s:
            return False
        self._checked = now
        pending = pending_of(self.source)  # before the current version (module docstring)
        version = self.source.current_version()
        if version is None:
            raise RuntimeError("tower source has no model and no bootstrap")
        changed = self.current is None or version != self.current.version
        if changed:
            loaded = self._load(version)
            if (problem := window_problem(loaded, self.keep)) is not None:
                # A running consumer keeps going (nothing accepted is dropped), on the
                # windows it has; start-up refuses this (``build_interaction_loop``).
                log.error(
                    "%s; embedding the last %d items meanwhile", problem, loaded.window(self.keep)
                )
            if self.current is not None:
                log.info("user tower %s -> %s", self.current.version, loaded.version)
            self.current = loaded
        self.pending = self._candidate(pending, self.current)
        return changed

    def _candidate(self, version: str | None, current: LoadedTower) -> LoadedTower | None:
        """The pending tower, or None: none, the current one, or one this consumer cannot
        write (logged once; its rows then come from the retrain's catch-up alone)."""
        if version is None or version == current.version:
            return None
        try:
            tower = self._load(version)
        except Exception as exc:  # a broken candidate never stops the serving version's rows
            self._refuse(version, str(exc))
            return None
        # An untrained bootstrap tower (no content model) serves before the first switch.
        if current.content_model is not None and tower.content_model != current.content_model:
            self._refuse(
                version,
                f"trained on content model {tower.content_model!r}, the serving one on "
                f"{current.content_model!r}",
            )
            return None
        if window_problem(tower, self.keep) is not None:
            self._refuse(version, str(window_problem(tower, self.keep)))
            return None
        return tower

    def _refuse(self, version: str, why: str) -> None:
        if version not in self._refused:
            self._refused.add(version)
            log.error("pending user tower %s not written by this consumer: %s", version, why)

    def _load(self, version: str) -> LoadedTower:
        if version not in self._loaded:
            tower = as_tower(version, self.source.load(version))
            tower.tower.eval()
            self._loaded[version] = tower
            while len(self._loaded) > 3:  # the current, a pending and the previous one
                self._loaded.pop(next(iter(self._loaded)))
        return self._loaded[version]

    def writing(self) -> list[LoadedTower]:
        """The towers to write with, the pending one first."""
        return [t for t in (self.pending, self.current) if t is not None]
