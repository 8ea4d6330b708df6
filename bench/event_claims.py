"""Event-id claims: bytes per claim and client CPU per claim call, SQLite and Redis.

    python -m bench.event_claims --out out/event_claims.json [--claims 100000 --batch 1000]

What the interaction consumer's first-write-wins rule costs (``streaming.event_claims``):

* ``fill``: ``--claims`` new ids of 40 characters claimed in batches of ``--batch``; the
  size of the store per claim (SQLite: the file after a WAL checkpoint; Redis: the
  change of ``used_memory`` of a private ``redis-server``) and the median client CPU
  (``time.process_time``) of one claim call;
* ``steady`` (SQLite): twice as many batches again, at the same rate, so that the
  store rotates its generations twice and drops a full one: the median call, and the
  slowest (the one that drops a generation), once the store is full. Redis expires
  its keys itself (server CPU, not measured here).

Sizing: bytes per claim × events per second × retention.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from devstack.kafka import free_port
from streaming.event_claims import RedisEventClaims, SqliteEventClaims

FINGERPRINT = "0123456789abcdef01234567"  # as long as event_fingerprint's digest
KEEP_S = 7 * 86_400.0


def batches(n: int, size: int) -> list[dict[str, str]]:
    ids = [f"evt-{uuid.uuid4()}" for _ in range(n)]
    return [{e: FINGERPRINT for e in ids[i : i + size]} for i in range(0, n, size)]


def cpu_ms(fn: Any, arg: Any) -> float:
    t0 = time.process_time()
    fn(arg)
    return (time.process_time() - t0) * 1000


def sqlite_run(work: list[dict[str, str]], again: list[dict[str, str]], tmp: Path) -> dict:
    path = tmp / "claims.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # as the history store
    clock = [1_700_000_000.0]
    claims = SqliteEventClaims(conn, clock=lambda: clock[0])
    step = KEEP_S / len(work)  # the fill spans one retention
    fill = []
    for b in work:
        fill.append(cpu_ms(lambda x: claims.claim(x, KEEP_S), b))
        clock[0] += step
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    steady = []
    for b in again:
        steady.append(cpu_ms(lambda x: claims.claim(x, KEEP_S), b))
        clock[0] += step
    rows = len(claims)
    conn.close()
    n = sum(map(len, work))
    return {
        "bytes_per_claim": size / n,
        "fill_cpu_ms_per_call": statistics.median(fill),
        "steady_cpu_ms_per_call": statistics.median(steady),
        "steady_cpu_ms_slowest_call": max(steady),
        "rows_after_steady": rows,
    }


def redis_run(work: list[dict[str, str]], tmp: Path) -> dict:
    import redis

    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        r = redis.Redis(port=port)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        version = r.info("server")["redis_version"]
        base = r.info("memory")["used_memory"]
        claims = RedisEventClaims(r, "learnrec:bench:")
        fill = [cpu_ms(lambda x: claims.claim(x, KEEP_S), b) for b in work]
        used = r.info("memory")["used_memory"] - base
        r.close()
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "redis_version": version,
        "bytes_per_claim": used / sum(map(len, work)),
        "fill_cpu_ms_per_call": statistics.median(fill),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--claims", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1_000)
    args = p.parse_args(argv)
    load_before = os.getloadavg()[0]
    work = batches(args.claims, args.batch)
    with tempfile.TemporaryDirectory(prefix="learnrec-bench-claims-") as tmp:
        sqlite = sqlite_run(work, batches(2 * args.claims, args.batch), Path(tmp))
        red = redis_run(work, Path(tmp))
    report = {
        "claims": args.claims,
        "batch": args.batch,
        "retention_s": KEEP_S,
        "sqlite": sqlite,
        "redis": red,
        "load1_before": load_before,
        "load1_after": os.getloadavg()[0],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(
        f"sqlite: {sqlite['bytes_per_claim']:.0f} B/claim; CPU per call of {args.batch}: "
        f"fill {sqlite['fill_cpu_ms_per_call']:.2f} ms, steady "
        f"{sqlite['steady_cpu_ms_per_call']:.2f} ms (slowest "
        f"{sqlite['steady_cpu_ms_slowest_call']:.2f} ms); rows after steady "
        f"{sqlite['rows_after_steady']}"
    )
    print(
        f"redis {red['redis_version']}: {red['bytes_per_claim']:.0f} B/claim; CPU per call "
        f"of {args.batch}: {red['fill_cpu_ms_per_call']:.2f} ms"
    )
    print(f"load (1 min) {load_before:.2f} -> {report['load1_after']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
