"""Which model the ranking side serves: the registry's current version, cached.

The reader needs the item tower (cold-start items), the CVR head (mid-emb and score)
and the version id that every row it serves must carry. ``ModelSource`` is the port
(``learn_core.registry.ModelRegistry`` in production, a dict in tests); ``ModelCache``
re-reads the cheap ``current`` pointer at most every ``check_s`` and loads a version's
weights once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ranking.core import NumpyCVR, VersionError, score_pairs

if TYPE_CHECKING:
    from learn_core.models.cvr import CVRHead
    from learn_core.models.towers import ItemTower, UserTower

log = logging.getLogger(__name__)


class ModelSource(Protocol):
    """The registry's read side: a cheap pointer and a loader."""

    def current_version(self) -> str | None: ...

    def load(self, version: str) -> Any:
        """An object with ``user_tower``, ``item_tower`` and ``cvr_head`` modules."""
        ...


@dataclass(frozen=True)
class ServingModel:
    version: str
    user_tower: UserTower
    item_tower: ItemTower
    cvr_head: CVRHead
    #: The head's numpy twin (checked equal at load); None: score with torch.
    numpy_cvr: NumpyCVR | None = None

    def score(self, user: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mid_emb [n, m], cvr [n])`` of one user against ``items [n, d]``."""
        if self.numpy_cvr is not None:
            return self.numpy_cvr(user, items)
        return score_pairs(self.cvr_head, user, items)

    @property
    def content_dim(self) -> int:
        return int(self.user_tower.cfg.content_dim)

    @property
    def dim(self) -> int:
        return int(self.user_tower.cfg.out_dim)


def as_serving(version: str, loaded: Any) -> ServingModel:
    """Accept a ``LoadedModel`` or a ``LearnModel`` (both expose the three modules)."""
    model = getattr(loaded, "model", loaded)
    parts = [getattr(model, n, None) for n in ("user_tower", "item_tower", "cvr_head")]
    if any(p is None for p in parts):
        raise TypeError(f"model {version} lacks user_tower/item_tower/cvr_head: {type(loaded)}")
    for p in parts:
        p.eval()
    twin = NumpyCVR.from_head(parts[2])
    if twin is None:
        log.info("model %s: CVR head scored with torch (no numpy twin)", version)
    return ServingModel(version, *parts, numpy_cvr=twin)


class ModelCache:
    """The current ``ServingModel``; refuses to serve when there is none."""

    def __init__(self, source: ModelSource, check_s: float = 0.2) -> None:
        self.source = source
        self.check_s = check_s
        self._lock = threading.Lock()
        self._loaded: dict[str, ServingModel] = {}
        self._current: ServingModel | None = None
        self._checked = -float("inf")

    def current(self) -> ServingModel:
        now = time.monotonic()
        cur = self._current
        if cur is not None and now - self._checked < self.check_s:
            return cur
        with self._lock:
            self._checked = time.monotonic()
            version = self.source.current_version()
            if version is None:
                raise VersionError("no model has been promoted yet: run `learnrec run-job retrain`")
            if self._current is None or self._current.version != version:
                self._current = self.get(version)
                log.info("ranking reader serves model %s", version)
            return self._current

    def get(self, version: str) -> ServingModel:
        """Load (once) a given version, e.g. for the backfill of a candidate."""
        if version not in self._loaded:
            self._loaded[version] = as_serving(version, self.source.load(version))
            # Keep the current and the previous version only: a switch needs both briefly.
            while len(self._loaded) > 2:
                self._loaded.pop(next(iter(self._loaded)))
        return self._loaded[version]


def open_registry() -> Any:
    """The model registry at its default root (``learn_core.registry``)."""
    from learn_core.registry import ModelRegistry

    return ModelRegistry()
