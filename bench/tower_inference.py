"""The user tower's streaming inference: windows as rows of a content matrix, or gathered.

    python -m bench.tower_inference --out out/tower_inference.json [--users 100,300 --threads 1,2]

A batch of the interaction consumer embeds ``B`` users' windows of ``--history`` items,
drawn from ``--items`` distinct items (skewed, as real interactions are). Two paths, in
this process, alternating in rounds so that machine noise hits both alike:

* ``rows``: ``learn_core.inference.embed_windows`` as the consumer runs it: each distinct
  item's content once (``window_rows``), the adaptor once per item, then the gather
  (``UserTower.forward_last_rows``);
* ``gathered``: the path it replaced, kept here as the baseline: a ``[B, H, D]`` content
  tensor (``pad_windows``) and the adaptor at every window position (``forward_last``).

Reported per ``(users, threads)``: the p50 wall time of one batch of each, their ratio,
and the largest difference between the two paths' vectors. An untrained tower of the
serving shape (384-d content, d_model 64, 2 layers): inference cost does not depend on
the weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.ranking_store import git_commit, machine, write_result


def _windows(users: int, items: int, history: int, rng: np.random.Generator) -> list[list[str]]:
    weights = 1.0 / np.arange(1, items + 1)  # a Zipf-like catalogue: a few items in most windows
    weights /= weights.sum()
    lengths = rng.integers(history // 5, 2 * history, size=users)
    return [[f"i{k}" for k in rng.choice(items, size=n, p=weights)] for n in lengths]


def run_case(users: int, threads: int, cfg: argparse.Namespace) -> dict[str, Any]:
    import torch

    from learn_core.history import pad_windows
    from learn_core.inference import embed_windows
    from learn_core.models.towers import TowerConfig, UserTower

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    content = {f"i{k}": rng.standard_normal(384).astype(np.float32) for k in range(cfg.items)}
    windows = _windows(users, cfg.items, cfg.history, rng)
    tower = UserTower(TowerConfig(max_len=max(64, cfg.history), item_variant=2)).eval()
    h = cfg.history

    def gathered() -> np.ndarray:
        x, mask = pad_windows(windows, content, h, 384)
        with torch.inference_mode():
            return tower.encode_histories(torch.from_numpy(x), torch.from_numpy(mask)).numpy()

    def rows() -> np.ndarray:
        return embed_windows(tower, windows, content, h)

    diff = float(np.abs(rows() - gathered()).max())
    times: dict[str, list[float]] = {"rows": [], "gathered": []}
    for _ in range(cfg.rounds):
        for name, fn in (("rows", rows), ("gathered", gathered)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    p50 = {k: float(np.percentile(v, 50) * 1000) for k, v in times.items()}
    distinct = len({i for w in windows for i in w[-h:]})
    return {
        "users": users,
        "threads": threads,
        "distinct_items": distinct,
        "rows_p50_ms": round(p50["rows"], 2),
        "gathered_p50_ms": round(p50["gathered"], 2),
        "speedup": round(p50["gathered"] / p50["rows"], 2),
        "max_abs_diff": diff,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--users", default="100,300", help="comma list of users per batch")
    p.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    p.add_argument("--items", type=int, default=1600, help="distinct items to draw from")
    p.add_argument("--history", type=int, default=50, help="window length H")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        users = [int(x) for x in args.users.split(",") if x.strip()]
        threads = [int(x) for x in args.threads.split(",") if x.strip()]
    except ValueError as exc:
        raise SystemExit(f"--users and --threads take comma lists of integers: {exc}") from exc
    if not users or not threads or min(users + threads) < 1 or args.items < 1:
        raise SystemExit("--users, --threads and --items must be positive")
    if args.history < 1 or args.rounds < 1:
        raise SystemExit("--history and --rounds must be positive")
    result: dict[str, Any] = {
        "bench": "tower_inference",
        "machine": machine(),
        "commit": git_commit(),
        "items": args.items,
        "history": args.history,
        "rounds": args.rounds,
        "cases": [],
    }
    for n in users:
        for t in threads:
            case = run_case(n, t, args)
            result["cases"].append(case)
            print(
                f"users {n:4d}  threads {t}  distinct items {case['distinct_items']:5d}  "
                f"rows {case['rows_p50_ms']:7.2f} ms  gathered {case['gathered_p50_ms']:7.2f} ms"
                f"  x{case['speedup']:.2f}  max diff {case['max_abs_diff']:.1e}"
            )
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
