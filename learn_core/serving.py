"""The served model, shared by the three stages: one model-source port, its implementations, a cache.

Every stage that runs a trained model asks a ``ModelSource`` (``learn_core.registry.
ModelRegistry`` in production) for the current version and loads it:

- the interaction consumer runs its user tower (``RegistryTowers``: the registry's
  current model, else a deterministic untrained *bootstrap* tower);
- the item consumer runs its item tower on new items (``ModelCache``);
- the ranking reader scores with all three modules (``ModelCache``);
- the retraining job evaluates and backfills with them (``as_serving``).

``ModelCache`` re-reads the cheap ``current`` pointer at most every ``check_s`` and
loads a version's weights once. Given the running content model's identity it refuses a
model trained on another content model (``learn_core.contract``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from learn_core.contract import check_content
from learn_core.scoring import NumpyCVR, score_pairs

if TYPE_CHECKING:
    from learn_core.models.cvr import CVRHead
    from learn_core.models.towers import ItemTower, TowerConfig, UserTower

log = logging.getLogger(__name__)


class VersionError(RuntimeError):
    """No servable model version, or the version changed under a request (HTTP 503)."""


class ModelSource(Protocol):
    """Where the current model comes from: a cheap pointer and a loader.

    ``load`` returns an object with a ``user_tower`` module; the ranking side and the
    jobs also need ``item_tower`` and ``cvr_head`` (a ``LoadedModel`` has all three, and a
    ``manifest`` that carries the serving contract).
    """

    def current_version(self) -> str | None:
        """Cheap: the version that ``load`` would return now (``None``: no model)."""
        ...

    def load(self, version: str) -> Any: ...


def pending_of(source: Any) -> str | None:
    """The version a switch under way will serve (``ModelRegistry.mark_pending``), which
    writers write beside the current one; None for a source without switches."""
    pending = getattr(source, "pending_version", None)
    return pending() if callable(pending) else None


# ------------------------------------------------------------------- user towers only


@dataclass(frozen=True)
class LoadedTower:
    """A user tower and the version it serves under (what the interaction consumer runs)."""

    version: str
    tower: UserTower
    #: Identity of the content model it was trained on (None: untrained or unknown).
    content_model: str | None = None
    #: The window it was trained on and is backfilled with (its serving contract's
    #: ``history_len``; None: no contract, e.g. the bootstrap tower).
    history_len: int | None = None

    def window(self, keep: int) -> int:
        """Items to embed per user when the consumer keeps ``keep``: the model's own
        window when the consumer keeps at least that many, never more than the tower's
        positions (``max_len``)."""
        want = keep if self.history_len is None else min(keep, self.history_len)
        return min(want, self.tower.cfg.max_len)

    @property
    def user_tower(self) -> UserTower:
        return self.tower


def as_tower(version: str, got: Any) -> LoadedTower:
    """A source's answer as a ``LoadedTower``: a tower source gives one; a whole model (a
    registry's ``LoadedModel``) gives its user tower, manifest and serving contract."""
    if isinstance(got, LoadedTower):
        return got
    manifest = getattr(got, "manifest", None) or {}
    serving = getattr(got, "serving", None)
    return LoadedTower(
        version,
        got.user_tower,
        manifest.get("content_model"),
        None if serving is None else serving.history_len,
    )


def bootstrap_tower(cfg: TowerConfig | None = None, seed: int = 0) -> LoadedTower:
    """A deterministic untrained tower; its version is a digest of its weights."""
    import torch

    from learn_core.models.towers import TowerConfig, UserTower

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        tower = UserTower(cfg or TowerConfig()).eval()
    finally:
        torch.random.set_rng_state(gen_state)
    h = hashlib.sha256()
    for name, t in sorted(tower.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return LoadedTower(f"bootstrap-{h.hexdigest()[:12]}", tower)


class BootstrapTowers:
    """A ``ModelSource`` with only the bootstrap tower (no registry yet)."""

    def __init__(self, cfg: TowerConfig | None = None) -> None:
        self._tower = bootstrap_tower(cfg)

    def current_version(self) -> str | None:
        return self._tower.version

    def load(self, version: str) -> LoadedTower:
        return self._tower


class FixedTowers:
    """A ``ModelSource`` serving given towers; ``version`` may be switched (tests, benches)."""

    def __init__(self, *towers: LoadedTower) -> None:
        self.towers = {t.version: t for t in towers}
        self.version = towers[0].version
        self.pending: str | None = None

    def current_version(self) -> str | None:
        return self.version

    def pending_version(self) -> str | None:
        return self.pending

    def load(self, version: str) -> LoadedTower:
        return self.towers[version]


class RegistryTowers:
    """A ``ModelSource`` over a registry: its current model, else the bootstrap tower."""

    def __init__(self, registry: ModelSource) -> None:
        self.registry = registry
        self.bootstrap = BootstrapTowers()

    @classmethod
    def open(cls) -> RegistryTowers:
        return cls(open_registry())

    def current_version(self) -> str | None:
        v = self.registry.current_version()
        return v if v is not None else self.bootstrap.current_version()

    def pending_version(self) -> str | None:
        return pending_of(self.registry)

    def load(self, version: str) -> LoadedTower:
        if version.startswith("bootstrap-"):
            return self.bootstrap.load(version)
        return as_tower(version, self.registry.load(version))


# ----------------------------------------------------------------- the whole model


@dataclass(frozen=True)
class ServingModel:
    version: str
    user_tower: UserTower
    item_tower: ItemTower
    cvr_head: CVRHead
    #: The head's numpy twin (checked equal at load); None: score with torch.
    numpy_cvr: NumpyCVR | None = None
    #: Identity of the content model it was trained on (from its manifest; None: unknown).
    content_model: str | None = None

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
    """Accept a ``LoadedModel`` or a ``LearnModel`` (both expose the three modules).

    A ``LoadedModel``'s manifest also gives the content identity it was trained on.
    """
    model = getattr(loaded, "model", loaded)
    parts = [getattr(model, n, None) for n in ("user_tower", "item_tower", "cvr_head")]
    if any(p is None for p in parts):
        raise TypeError(f"model {version} lacks user_tower/item_tower/cvr_head: {type(loaded)}")
    for p in parts:
        p.eval()
    twin = NumpyCVR.from_head(parts[2])
    if twin is None:
        log.info("model %s: CVR head scored with torch (no numpy twin)", version)
    manifest = getattr(loaded, "manifest", None) or {}
    return ServingModel(
        version, *parts, numpy_cvr=twin, content_model=manifest.get("content_model")
    )


class ModelCache:
    """The current ``ServingModel``; refuses to serve when there is none.

    Two ways to follow the registry's pointer:

    * lazily (default): ``current()`` re-reads the pointer when ``check_s`` has passed,
      so one request in each period pays for the read (a file read, or a GET on S3) and,
      after a promotion, for loading the new version;
    * in the background (``start()``, what the ranking service does): a daemon thread
      re-reads the pointer every ``check_s`` and loads a new version before it swaps the
      reference, so ``current()`` is one attribute read and no request waits on the
      registry, its lock or a load. A failed poll keeps the version in service.

    ``expect_content``: the identity of the content model whose vectors this process
    feeds the towers (``learn_core.embedding.identity``); a version trained on another
    one is refused (``ContentMismatch``) instead of served.

    ``follow_pending`` (writers): each check also reads the pending version, first, and
    ``writing()`` gives it with the current one, so rows written while a switch is under
    way exist under both versions (docs/deploy.md, "Switch during streaming").
    """

    def __init__(
        self,
        source: ModelSource,
        check_s: float = 0.2,
        expect_content: str | None = None,
        follow_pending: bool = False,
    ) -> None:
        self.source = source
        self.check_s = check_s
        self.expect_content = expect_content
        self.follow_pending = follow_pending
        self._lock = threading.Lock()
        self._loaded: dict[str, ServingModel] = {}
        self._current: ServingModel | None = None
        self._writes: list[ServingModel] = []
        self._refused: set[str] = set()
        self._checked = -float("inf")
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def current(self) -> ServingModel:
        cur = self._current
        if cur is not None and (
            self._poller is not None or time.monotonic() - self._checked < self.check_s
        ):
            return cur
        with self._lock:
            if self._current is not None and time.monotonic() - self._checked < self.check_s:
                return self._current  # another thread re-read the pointer meanwhile
            return self._refresh()

    def _refresh(self) -> ServingModel:
        """Re-read the pointer and load a new version (caller holds ``_lock``)."""
        self._checked = time.monotonic()
        # Pending before current: a switch writes CURRENT, then clears PENDING.
        pending = pending_of(self.source) if self.follow_pending else None
        version = self.source.current_version()
        if version is None:
            raise VersionError("no model has been promoted yet: run `learnrec run-job retrain`")
        if self._current is None or self._current.version != version:
            self._current = self.get(version)  # one reference assignment: atomic
            log.info("serving model %s", version)
        writes = [self._current]
        if pending is not None and pending != version:
            try:
                writes.insert(0, self.get(pending))  # the pending version's rows land first
            except Exception as exc:  # a broken candidate never stops the current writes
                if pending not in self._refused:
                    self._refused.add(pending)
                    log.error("pending model %s not written: %s", pending, exc)
        self._writes = writes
        return self._current

    def writing(self) -> list[ServingModel]:
        """The versions a writer writes now: the pending one (while a switch is under
        way), then the current one. Needs ``follow_pending``. Before the first promotion
        the pending version alone; with neither, ``VersionError``."""
        try:
            self.current()
        except VersionError:
            pending = pending_of(self.source) if self.follow_pending else None
            if pending is None:
                raise
            with self._lock:
                return [self.get(pending)]  # the first switch: no version serves yet
        return self._writes

    def start(self) -> None:
        """Follow the pointer from a background thread (idempotent). With ``check_s`` 0
        every ``current()`` reads the pointer itself, as without a thread."""
        if self._poller is None and self.check_s > 0:
            self._stop.clear()
            self._poller = threading.Thread(target=self._poll, name="model-poll", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        said = ""
        while not self._stop.wait(max(self.check_s, 0.01)):
            try:
                with self._lock:
                    self._refresh()
                said = ""
            except VersionError:  # no model any more: requests take the lazy path and 503
                self._current = None
            except Exception as exc:  # keep serving the loaded version; say why, once
                cur = self._current
                if repr(exc) != said:
                    said = repr(exc)
                    log.warning(
                        "model pointer check failed (%s); still serving %s",
                        said,
                        cur.version if cur is not None else None,
                    )

    def close(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            self._stop.set()
            poller.join(timeout=5)

    def get(self, version: str) -> ServingModel:
        """Load (once) a given version, e.g. for the backfill of a candidate."""
        if version not in self._loaded:
            where = "the running content model"
            manifest = getattr(self.source, "manifest", None)
            if self.expect_content is not None and callable(manifest):
                # The registry's manifest is cheap: refuse before loading any weights.
                check_content(version, manifest(version), self.expect_content, where)
            loaded = self.source.load(version)
            if self.expect_content is not None:
                check_content(
                    version, getattr(loaded, "manifest", None), self.expect_content, where
                )
            self._loaded[version] = as_serving(version, loaded)
            # Keep the current, a pending and the previous version: a switch needs them.
            while len(self._loaded) > 3:
                self._loaded.pop(next(iter(self._loaded)))
        return self._loaded[version]


def open_registry() -> Any:
    """The model registry at its default root (``learn_core.registry``)."""
    from learn_core.registry import ModelRegistry

    return ModelRegistry()
