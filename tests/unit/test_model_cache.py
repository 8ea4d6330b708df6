"""ModelCache off the request path: a background poll, an atomic swap, and the thread limits."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from learn_core.runtime import limit_threads
from learn_core.serving import ModelCache, VersionError
from tests.unit.test_ranking import MemoryModels, small_model

WAIT_S = 30.0  # a hang guard, not a speed assertion


class CountingModels(MemoryModels):
    """In-memory models that count pointer reads and note which thread loaded a version."""

    def __init__(self, **models) -> None:
        super().__init__(**models)
        self.reads = 0
        self.loaded_by: dict[str, str] = {}
        self.fail: Exception | None = None

    def current_version(self) -> str | None:
        self.reads += 1
        if self.fail is not None:
            raise self.fail
        return self.version

    def load(self, version: str):
        self.loaded_by[version] = threading.current_thread().name
        return super().load(version)


def _until(cond) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("the background poll did not get there")
        time.sleep(0.01)


def test_requests_never_read_the_pointer_or_load_once_the_poll_runs() -> None:
    models = CountingModels(v1=small_model(0), v2=small_model(1))
    cache = ModelCache(models, check_s=0.05)
    assert cache.current().version == "v1"  # the first model: loaded by the caller
    cache.start()
    try:
        _until(lambda: models.reads >= 3)
        models.version = "v2"
        _until(lambda: cache.current().version == "v2")
        # The poll thread read the pointer and loaded v2; requests only swapped references.
        assert models.loaded_by == {"v1": "MainThread", "v2": "model-poll"}
        cache.close()
        reads = models.reads
        for _ in range(1000):
            assert cache.current().version == "v2"
        assert models.reads == reads  # closed: no poll; within check_s: no request read either
    finally:
        cache.close()


def test_a_failing_poll_keeps_the_loaded_version_and_no_model_is_a_503() -> None:
    models = CountingModels(v1=small_model(0))
    cache = ModelCache(models, check_s=0.05)
    cache.current()
    cache.start()
    try:
        models.fail = OSError("registry unreachable")
        reads = models.reads
        _until(lambda: models.reads >= reads + 3)
        assert cache.current().version == "v1"  # still served
        models.fail = None
        models.version = None  # the pointer is gone: requests get the 503 again
        _until(lambda: cache._current is None)
        with pytest.raises(VersionError, match="no model has been promoted"):
            cache.current()
    finally:
        cache.close()


def test_check_s_zero_reads_the_pointer_on_every_request() -> None:
    models = CountingModels(v1=small_model(0), v2=small_model(1))
    cache = ModelCache(models, check_s=0)
    cache.start()  # no thread: every request checks, as tests and the old path expect
    assert cache.current().version == "v1"
    models.version = "v2"
    assert cache.current().version == "v2"
    assert models.reads == 2


def test_limit_threads_sets_blas_and_torch_pools() -> None:
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas() -> set[int]:
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    before = torch.get_num_threads()
    try:
        threadpool_limits(limits=2, user_api="blas")  # as on a 2-core machine by default
        torch.set_num_threads(2)
        assert limit_threads(0, 2) == {"blas": 2, "torch": 2}  # 0: left as it is
        assert limit_threads(1, 1) == {"blas": 1, "torch": 1}
        assert blas() == {1} and torch.get_num_threads() == 1
        a = np.ones((100, 64), np.float32)
        assert (a @ np.ones((64, 128), np.float32) == 64).all()  # still computes
    finally:
        torch.set_num_threads(before)
        threadpool_limits(limits=1, user_api="blas")


def test_settle_heap_freezes_what_is_alive() -> None:
    import gc

    from learn_core.runtime import settle_heap

    alive = [[[i]] for i in range(1000)]  # lists stay tracked (atomic-only dicts do not)
    try:
        assert settle_heap() >= 1000
        tracked = {id(o) for o in gc.get_objects()}
        assert id(alive[0]) not in tracked  # frozen: no collection walks it
    finally:
        gc.unfreeze()
    assert any(o is alive[0] for o in gc.get_objects())
