"""bench.ranking's pure parts: the closed-loop callers, the percentiles and the GC counter."""

from __future__ import annotations

import gc
import threading

import pytest

from bench.ranking import GcPauses, measure, run_block, stats


@pytest.mark.parametrize("threads", [1, 4])
def test_every_request_runs_once_and_gets_one_latency(threads: int) -> None:
    seen: list[tuple[str, tuple[str, ...]]] = []
    names: set[str] = set()
    lock = threading.Lock()

    def call(u: str, c: list[str]) -> None:
        with lock:
            seen.append((u, tuple(c)))
            names.add(threading.current_thread().name)

    chunk = [(f"u{i}", [f"i{i}", f"j{i}"]) for i in range(50)]
    lat = run_block(call, chunk, threads)
    assert len(lat) == 50 and all(t >= 0 for t in lat)
    assert sorted(seen) == sorted((u, tuple(c)) for u, c in chunk)
    assert names == {"MainThread"} if threads == 1 else "MainThread" not in names


def test_an_error_in_a_caller_thread_is_raised() -> None:
    def boom(u: str, c: list[str]) -> None:
        raise AssertionError(f"not all ok for {u}")

    with pytest.raises(AssertionError, match="not all ok"):
        run_block(boom, [("u", ["i"])] * 8, 4)


def test_measure_alternates_and_skips_the_warmup() -> None:
    order: list[str] = []
    calls = {
        "reader": lambda u, c: order.append("r"),
        "feast_sdk": lambda u, c: order.append("s"),
    }
    reqs = [("u", ["i"])] * 30
    times = measure(calls, reqs, warmup=10, threads=1, block=5)
    assert len(times["reader"]) == len(times["feast_sdk"]) == 20
    assert order[20:] == (["r"] * 5 + ["s"] * 5) * 4  # after 10 + 10 warm-up calls
    out = stats(
        {
            "reader": [0.001] * 99 + [0.002],
            "reader_uncached": [0.003] * 100,
            "feast_sdk": [0.010] * 100,
        },
        "threads4_",
    )
    assert out["threads4_p50_ms"] == pytest.approx(1.0)
    assert out["threads4_uncached_p99_ms"] == pytest.approx(3.0)
    assert out["threads4_speedup_p99"] == pytest.approx(10.0 / out["threads4_p99_ms"])


def test_gc_pauses_counts_only_while_on() -> None:
    gcp = GcPauses()
    gc.callbacks.append(gcp)
    try:
        gc.collect()
        assert gcp.summary()["count"] == 0
        gcp.on = True
        gc.collect()
        gc.collect(0)
    finally:
        gc.callbacks.remove(gcp)
    got = gcp.summary()
    assert got["count"] == 2 and got["per_generation"] == [1, 0, 1]
    assert got["max_ms"] >= 0
