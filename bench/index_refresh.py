"""The retrieval index's refresh under item churn: insertion cursor against event-time window.

    python -m bench.index_refresh --out out/index_refresh.json [--seconds 20 --rate 200]

Each profile (``embedded``: parquet; ``production``: PostgreSQL, when ``LEARNREC_FEAST_*``
or ``.ci/services.sh`` provide it) gets a throwaway project whose item-tower log holds
``--items`` rows of one version. Then, for ``--seconds``, a batch of new items is appended
every ``--period`` seconds (``--rate`` items/s), and after each append both pollers run on
the same log, one after the other, on this thread:

* ``cursor``: the index's feed (``ranking.retrieval``), ``OfflineLog.read_new``;
* ``window``: what it did before, kept here as the baseline: the rows whose event time is
  at most 30 s older than the previous poll's start (``read_offline(start=...)``), then
  the newest row per item.

Reported per poller: the CPU time of a poll (``time.thread_time``: this process's share;
PostgreSQL's own work is not in it) over the last half of the churn (the window is then
full; the catalogue's rows are stamped an hour back, outside it), the rows each read, an
idle poll's CPU after the churn, and whether every appended item was read.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.http_ranking import profile_settings
from bench.ranking_store import cleanup, git_commit, machine, write_result
from feature_repo.schema import ITEM_TOWER
from learn_core.settings import ServiceUnavailableError
from ranking.retrieval import _Feed, latest_rows

log = logging.getLogger(__name__)

VERSION = "bench-refresh"
WINDOW_SLACK = timedelta(seconds=30)  # the window poller's reach, as before the cursor


class WindowFeed:
    """The event-time poll the cursor replaced (the baseline)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.since = datetime.now(UTC) - WINDOW_SLACK

    def poll(self) -> pd.DataFrame:
        started = datetime.now(UTC)
        rows = self.handle.read_offline(ITEM_TOWER.name, start=self.since)
        self.since = started - WINDOW_SLACK
        return rows if rows.empty else latest_rows(rows, VERSION)


def tower_rows(
    ids: list[str], dim: int, rng: np.random.Generator, age: timedelta = timedelta(0)
) -> pd.DataFrame:
    now = pd.Timestamp(datetime.now(UTC))
    return pd.DataFrame(
        {
            "item_id": ids,
            "embedding": list(rng.standard_normal((len(ids), dim)).astype(np.float32)),
            "model_version": VERSION,
            "event_timestamp": now - age,
            "created": now,
        }
    )


def timed(poll: Any) -> tuple[float, pd.DataFrame]:
    c0 = time.thread_time()
    rows = poll()
    return 1000 * (time.thread_time() - c0), rows


def summary(ms: list[float], rows: list[int]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "cpu_ms_mean": float(a.mean()),
        "cpu_ms_p50": float(np.percentile(a, 50)),
        "cpu_ms_max": float(a.max()),
        "rows_per_poll_mean": float(np.mean(rows)),
    }


def bench_profile(args: argparse.Namespace, tmp: Path, profile: str) -> dict[str, Any]:
    from feature_repo.store import open_store

    # ``auto``: PostgreSQL when configured or started, else embedded (then skipped here).
    settings = profile_settings("auto" if profile == "production" else profile, tmp)
    if profile == "production" and settings.profile != "production":
        return {"skipped": "no PostgreSQL configured or started"}
    handle = open_store(settings)
    rng = np.random.default_rng(args.seed)
    try:
        base = [f"i{n:06d}" for n in range(args.items)]
        for at in range(0, len(base), 5000):
            # Stamped an hour ago, outside the window poller's reach: only churn counts.
            chunk = tower_rows(base[at : at + 5000], args.dim, rng, timedelta(hours=1))
            handle.append_offline(ITEM_TOWER.name, chunk)
        cursor = _Feed(handle)
        cursor.reset(VERSION)
        window = WindowFeed(handle)
        batch = max(1, round(args.rate * args.period))
        polls = int(args.seconds / args.period)
        ms: dict[str, list[float]] = {"cursor": [], "window": []}
        counts: dict[str, list[int]] = {"cursor": [], "window": []}
        seen: dict[str, set[str]] = {"cursor": set(), "window": set()}
        added: list[str] = []
        start = time.monotonic()
        for p in range(polls):
            ids = [f"n{p:05d}_{k:04d}" for k in range(batch)]
            handle.append_offline(ITEM_TOWER.name, tower_rows(ids, args.dim, rng))
            added += ids
            for name, feed in (("cursor", cursor), ("window", window)):
                cpu, rows = timed(feed.poll)
                ms[name].append(cpu)
                counts[name].append(len(rows))
                seen[name].update(rows["item_id"])
            time.sleep(max(0.0, start + (p + 1) * args.period - time.monotonic()))
        idle = {
            name: float(np.median([timed(feed.poll)[0] for _ in range(20)]))
            for name, feed in (("cursor", cursor), ("window", window))
        }
        half = polls // 2
        out: dict[str, Any] = {"profile": settings.profile, "polls": polls, "batch": batch}
        for name in ("cursor", "window"):
            out[name] = {
                **summary(ms[name][half:], counts[name][half:]),
                "idle_cpu_ms_p50": idle[name],
                "read_every_new_item": seen[name] >= set(added),
            }
        out["window_over_cursor_cpu"] = (
            out["window"]["cpu_ms_mean"] / out["cursor"]["cpu_ms_mean"]
            if out["cursor"]["cpu_ms_mean"] > 0
            else None
        )
        return out
    finally:
        cleanup(handle)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--items", type=int, default=5000, help="catalogue rows before the churn")
    p.add_argument("--rate", type=float, default=200.0, help="new items per second")
    p.add_argument("--period", type=float, default=0.5, help="seconds between polls")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the churn")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profiles", default="embedded,production")
    args = p.parse_args(argv)
    profiles = [x.strip() for x in args.profiles.split(",") if x.strip()]
    bad = [x for x in profiles if x not in ("embedded", "production")]
    if bad or not profiles:
        raise SystemExit(f"--profiles: unknown {bad or args.profiles!r}; use embedded,production")
    if args.period <= 0 or args.seconds < 2 * args.period or args.rate <= 0:
        raise SystemExit("--period and --rate must be > 0 and --seconds at least two periods")
    logging.basicConfig(level=logging.WARNING)
    result: dict[str, Any] = {
        "bench": "index_refresh",
        "machine": machine(),
        "commit": git_commit(),
        "rate_per_s": args.rate,
        "period_s": args.period,
        "seconds": args.seconds,
        "profiles": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="learnrec-bench-refresh-"))
    try:
        for profile in profiles:
            try:
                got = bench_profile(args, tmp, profile)
            except ServiceUnavailableError as exc:  # configured, but down: say so, go on
                got = {"skipped": str(exc)}
            result["profiles"][profile] = got
            if "skipped" in got:
                print(f"{profile}: skipped ({got['skipped']})")
                continue
            for name in ("cursor", "window"):
                r = got[name]
                print(
                    f"{profile:10s} {name:6s} CPU/poll mean {r['cpu_ms_mean']:7.2f} ms "
                    f"(p50 {r['cpu_ms_p50']:.2f}, max {r['cpu_ms_max']:.2f}), "
                    f"rows/poll {r['rows_per_poll_mean']:7.0f}, idle poll "
                    f"{r['idle_cpu_ms_p50']:.2f} ms, every new item read: "
                    f"{r['read_every_new_item']}"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
