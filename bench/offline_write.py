"""Does appending to the offline log cost the same on a small and a large table?

    python -m bench.offline_write --out out/offline_write.json [--small 10000 --large 1000000]

For each backend (parquet directory; PostgreSQL when ``LEARNREC_FEAST_PG_*`` point at a
reachable server, e.g. after ``eval "$(.ci/services.sh start)"``), the table
``item_content_embedding`` is filled to ``--small`` rows, then ``--repeats`` fresh
batches of ``--batch`` rows are appended and timed; the same again at ``--large`` rows.
Rows are 384-d float32 vectors, the width of the content embedding (all-MiniLM-L6-v2),
the widest view we store. The JSON holds every timing and ``ratio`` = median append
time at large / at small; the target is <= 2.

Parquet prefill uses the log's own ``append`` in big batches; PostgreSQL prefill is
generated server-side (``generate_series``), which is much faster than sending 1.5 GB.
Everything lives in a temp dir / a uuid-named project and is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from feature_repo.offline_log.base import OfflineLog
from feature_repo.offline_log.parquet import ParquetOfflineLog
from feature_repo.schema import ITEM_CONTENT

logger = logging.getLogger(__name__)

NAME = ITEM_CONTENT.name
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class BenchConfig:
    small: int = 10_000
    large: int = 1_000_000
    batch: int = 1_000
    dim: int = 384
    repeats: int = 11
    prefill_batch: int = 50_000
    backends: tuple[str, ...] = ("parquet", "postgres")


@dataclass
class BackendResult:
    backend: str
    append_s_small: list[float] = field(default_factory=list)
    append_s_large: list[float] = field(default_factory=list)
    median_small_s: float = 0.0
    median_large_s: float = 0.0
    ratio: float = 0.0
    #: min(large) / min(small): less sensitive to other load on a shared machine.
    ratio_min: float = 0.0
    rows_stored_large: int = 0
    skipped: str | None = None


def make_batch(start: int, n: int, dim: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` rows with fresh keys ``item-<start..start+n>``, one second apart."""
    vecs = rng.standard_normal((n, dim), dtype=np.float32)
    return pd.DataFrame(
        {
            "item_id": [f"item-{i}" for i in range(start, start + n)],
            "embedding": list(vecs),
            "model_version": "bench",
            "event_timestamp": pd.date_range(T0 + timedelta(seconds=start), periods=n, freq="s"),
        }
    )


def _time_appends(
    log: OfflineLog, cfg: BenchConfig, next_key: int, rng: np.random.Generator
) -> tuple[list[float], int]:
    times = []
    for _ in range(cfg.repeats):
        df = make_batch(next_key, cfg.batch, cfg.dim, rng)
        t = time.perf_counter()
        stored = log.append(NAME, df)
        times.append(time.perf_counter() - t)
        assert stored == cfg.batch, f"expected {cfg.batch} new rows, stored {stored}"
        next_key += cfg.batch
    return times, next_key


def _run(
    backend: str,
    log: OfflineLog,
    fill_to: Callable[[int, int], None],
    count: Callable[[], int],
    cfg: BenchConfig,
) -> BackendResult:
    """Fill to small, time; fill to large, time. ``fill_to(have, want)`` adds rows."""
    rng = np.random.default_rng(0)
    res = BackendResult(backend)
    # Keys of timed batches live far above the prefill range so they never collide.
    next_key = 10 * cfg.large
    fill_to(0, cfg.small)
    res.append_s_small, next_key = _time_appends(log, cfg, next_key, rng)
    have = count()
    fill_to(have, cfg.large)
    res.append_s_large, next_key = _time_appends(log, cfg, next_key, rng)
    res.rows_stored_large = count()
    res.median_small_s = statistics.median(res.append_s_small)
    res.median_large_s = statistics.median(res.append_s_large)
    res.ratio = res.median_large_s / res.median_small_s
    res.ratio_min = min(res.append_s_large) / min(res.append_s_small)
    return res


def bench_parquet(cfg: BenchConfig) -> BackendResult:
    root = Path(tempfile.mkdtemp(prefix="learnrec-bench-"))
    try:
        log = ParquetOfflineLog(root)
        log.ensure(NAME)
        rng = np.random.default_rng(1)

        def fill_to(have: int, want: int) -> None:
            # Prefill keys count up from `have`; timed batches use keys far above.
            with tqdm(total=want, initial=have, desc="parquet prefill", unit="row") as bar:
                for lo in range(have, want, cfg.prefill_batch):
                    n = min(cfg.prefill_batch, want - lo)
                    log.append(NAME, make_batch(lo, n, cfg.dim, rng))
                    bar.update(n)

        def count() -> int:
            import pyarrow.parquet as pq

            return sum(pq.read_metadata(p).num_rows for p in log.parts(NAME))

        return _run("parquet", log, fill_to, count, cfg)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_postgres(cfg: BenchConfig) -> BackendResult:
    import psycopg

    from feature_repo.offline_log.postgres import PostgresOfflineLog
    from feature_repo.settings import FeastSettings
    from feature_repo.store import pg_conninfo
    from learn_core.settings import load

    settings = load(FeastSettings, profile="production")
    try:
        log = PostgresOfflineLog(pg_conninfo(settings), f"bench_{uuid.uuid4().hex[:8]}")
    except psycopg.OperationalError as exc:
        return BackendResult("postgres", skipped=f"PostgreSQL not reachable: {exc}")
    table = log.ensure(NAME)

    def fill_to(have: int, want: int) -> None:
        # Server-side rows: same shape (384 reals), distinct keys below the timed range.
        step = cfg.prefill_batch
        with tqdm(total=want, initial=have, desc="postgres prefill", unit="row") as bar:
            for lo in range(have, want, step):
                hi = min(lo + step, want)
                with log._conn.transaction():
                    log._conn.execute(
                        f"INSERT INTO \"{table}\" SELECT 'fill-' || g, "  # type: ignore[arg-type]
                        f"array_fill(random()::real, ARRAY[{cfg.dim}]), 'bench', "
                        "%s::timestamptz + g * interval '1 second', now() "
                        "FROM generate_series(%s::bigint, %s::bigint) g",
                        (T0, lo, hi - 1),
                    )
                bar.update(hi - lo)
        with log._conn.transaction():
            log._conn.execute(f'ANALYZE "{table}"')  # type: ignore[arg-type]

    try:
        return _run("postgres", log, fill_to, lambda: log.count(NAME), cfg)
    finally:
        log.drop(NAME)
        log.close()


def run(cfg: BenchConfig) -> dict[str, object]:
    results = []
    for backend in cfg.backends:
        logger.info("benchmarking %s", backend)
        res = bench_parquet(cfg) if backend == "parquet" else bench_postgres(cfg)
        results.append(res)
    return {
        "benchmark": "offline_write",
        "config": asdict(cfg),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "results": [asdict(r) for r in results],
        "target_ratio": 2.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--small", type=int, default=BenchConfig.small)
    p.add_argument("--large", type=int, default=BenchConfig.large)
    p.add_argument("--batch", type=int, default=BenchConfig.batch)
    p.add_argument("--dim", type=int, default=BenchConfig.dim)
    p.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    p.add_argument("--backends", default="parquet,postgres", help="comma-separated")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = BenchConfig(
        small=args.small,
        large=args.large,
        batch=args.batch,
        dim=args.dim,
        repeats=args.repeats,
        backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()),
    )
    report = run(cfg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for r in report["results"]:  # type: ignore[union-attr]
        if r["skipped"]:
            print(f"{r['backend']:9s} skipped: {r['skipped']}")
            continue
        print(
            f"{r['backend']:9s} append {cfg.batch} x {cfg.dim}-d: "
            f"{r['median_small_s'] * 1e3:8.1f} ms at {cfg.small:,} rows, "
            f"{r['median_large_s'] * 1e3:8.1f} ms at {r['rows_stored_large']:,} rows, "
            f"ratio {r['ratio']:.2f} (of minima {r['ratio_min']:.2f}; target <= 2)"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
