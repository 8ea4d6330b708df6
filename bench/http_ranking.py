"""Ranking over HTTP: ``learnrec serve`` against Feast's own ``feast serve``, same store.

    python -m bench.http_ranking --out out/http_ranking.json [--requests 1000 --profile auto]

Set-up (as ``bench.ranking``, whose functions it reuses): a throwaway Feast project
(``embedded``: SQLite; ``production``: Redis + PostgreSQL when ``LEARNREC_FEAST_*`` or
``.ci/services.sh`` provide them; ``auto``: production when available) gets ``--items``
item and ``--users`` user vectors of one untrained LEARN model, which is saved to a
throwaway registry and promoted. Then two servers start on loopback ports, in their
own processes, over that store:

* ``ours``: ``python -m learnrec serve`` (``POST /rank`` {user_id, item_ids}: the user
  and 100 item embeddings, mid-embs and CVR scores, all of the serving version);
* ``feast``: ``feast -c <repo> serve`` (``POST /get-online-features`` for the same
  user and items: user and item embeddings and model_version, no scoring), with
  gunicorn's worker recycling off so that it does not stall Feast's own tail.

One closed-loop client (``http.client``, one keep-alive connection per thread) sends
each server the same request sequence, at 1 and at 8 concurrent connections, in
alternating rounds so that machine noise hits both alike; each round starts with
``--round-warmup`` unmeasured requests, since our item near-cache expires while the other
servers run (the steady state is measured; a cold start is not). A request counts only with
status 200; the first responses of each server are checked for content (every
candidate scored or present). Reported per server and concurrency: p50, p99, p99.9
and requests/s, plus the 1-minute load average before and after (targets, issue 13:
``p99_ms_c8`` <= 10 and <= ``feast_server_p99_ms_c8`` / 3).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.http_harness import (
    Server,
    closed_loop,
    get_json,
    group_cpu_s,
    post,
    post_json,
)
from bench.ranking_store import (
    cleanup,
    fill,
    git_commit,
    machine,
    production_settings,
    write_result,
)
from devstack.kafka import free_port
from feature_repo.online.versions import online_id
from feature_repo.schema import ITEM_TOWER, USER_TOWER
from feature_repo.settings import FeastSettings
from learn_core.settings import load
from ranking.wire import MEDIA_TYPE, decode_rank

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ITEM_VIEW, USER_VIEW = ITEM_TOWER.name, USER_TOWER.name
FEATURES = [f"{v}:{f}" for v in (USER_VIEW, ITEM_VIEW) for f in ("embedding", "model_version")]
CONCURRENCY = (1, 8)


# --- pure parts (unit-tested) -----------------------------------------------------------


def percentiles(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p99/p99.9 and mean in milliseconds (numpy's linear interpolation)."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise ValueError("no latencies")
    p50, p99, p999 = np.percentile(ms, [50, 99, 99.9])
    return {
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "p999_ms": float(p999),
        "mean_ms": float(ms.mean()),
    }


def rank_body(user_id: str, item_ids: Sequence[str]) -> bytes:
    """Our ``POST /rank`` body."""
    return json.dumps({"user_id": user_id, "item_ids": list(item_ids)}).encode()


def feast_body(user_id: str, item_ids: Sequence[str]) -> bytes:
    """Feast's ``POST /get-online-features`` body: one (user, item) row per candidate."""
    return json.dumps(
        {
            "features": FEATURES,
            "entities": {"user_id": [user_id] * len(item_ids), "item_id": list(item_ids)},
            "full_feature_names": True,
        }
    ).encode()


def versioned(version: str, user_id: str, item_ids: Sequence[str]) -> tuple[str, list[str]]:
    """The ids stock Feast reads ``version``'s rows under (blue/green keys)."""
    return online_id(version, user_id), [online_id(version, i) for i in item_ids]


def check_ours(payload: dict[str, Any], version: str, n: int) -> None:
    statuses = [it["status"] for it in payload["items"]]
    if payload["model_version"] != version or statuses != ["ok"] * n:
        raise AssertionError(f"/rank: version {payload['model_version']}, statuses {statuses[:5]}")


def check_feast(payload: dict[str, Any], n: int) -> None:
    names = payload["metadata"]["feature_names"]
    col = payload["results"][names.index(f"{ITEM_VIEW}__embedding")]
    present = sum(s == "PRESENT" for s in col["statuses"])
    if present != n:
        raise AssertionError(f"/get-online-features: {present} of {n} item embeddings present")


# --- the answers -------------------------------------------------------------------------


def check_binary(content_type: str, data: bytes, json_answer: dict[str, Any]) -> None:
    """The compact answer decodes to the float32s the JSON answer's decimals read back to."""
    if content_type != MEDIA_TYPE:
        raise AssertionError(f"/rank with Accept {MEDIA_TYPE}: got {content_type!r}")
    got = decode_rank(data)
    want = json_answer["items"]

    def f32(values: Any) -> np.ndarray:
        return np.asarray(values, np.float64).astype(np.float32)

    if (
        got.model_version != json_answer["model_version"]
        or got.item_ids != [it["item_id"] for it in want]
        or not np.array_equal(got.item_embeddings, f32([it["embedding"] for it in want]))
        or not np.array_equal(got.mid_emb, f32([it["mid_emb"] for it in want]))
        or not np.array_equal(got.cvr, f32([it["cvr"] for it in want]))
        or not np.array_equal(got.user_embedding, f32(json_answer["user_embedding"]))
    ):
        raise AssertionError("/rank: the compact answer differs from the JSON answer")


def server_env(settings: FeastSettings, registry_root: Path) -> dict[str, str]:
    """The environment both servers read: the same Feast project and our registry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNREC_")}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        LEARNREC_FEAST_PROFILE=settings.profile,
        LEARNREC_FEAST_PROJECT=settings.project,
        LEARNREC_FEAST_DATA_DIR=str(settings.resolved_data_dir()),
        LEARNREC_REGISTRY_ROOT=str(registry_root),
    )
    # The service's own settings pass through, so that one run can try another value.
    env.update({k: v for k, v in os.environ.items() if k.startswith("LEARNREC_RANKING_")})
    if settings.profile == "production":
        env.update(
            LEARNREC_FEAST_REDIS_URL=settings.redis_url,
            LEARNREC_FEAST_PG_HOST=settings.pg_host,
            LEARNREC_FEAST_PG_PORT=str(settings.pg_port),
            LEARNREC_FEAST_PG_DB=settings.pg_db,
            LEARNREC_FEAST_PG_USER=settings.pg_user,
            LEARNREC_FEAST_PG_PASSWORD=settings.pg_password.get_secret_value(),
            LEARNREC_FEAST_PG_SSLMODE=settings.pg_sslmode,
        )
    return env


# --- the benchmark --------------------------------------------------------------------------


def profile_settings(profile: str, tmp: Path) -> FeastSettings:
    project = f"bench_{uuid.uuid4().hex[:10]}"
    if profile in ("production", "auto"):
        s = production_settings(project, tmp / project)
        if s is not None:
            return s
        if profile == "production":
            raise SystemExit("production profile: no LEARNREC_FEAST_PG_* and no .ci/services.sh")
    return load(FeastSettings, profile="embedded", project=project, data_dir=tmp / project)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import torch

    from feature_repo.store import open_store
    from learn_core.models import LearnConfig, LearnModel
    from learn_core.registry import ModelRegistry

    settings = profile_settings(args.profile, tmp)
    torch.manual_seed(0)
    model = LearnModel(LearnConfig()).eval()
    registry = ModelRegistry(tmp / "registry")
    version = registry.save(model, content_model="bench-untrained")
    registry.promote(version)
    handle = open_store(settings)
    with ExitStack() as stack:
        stack.callback(cleanup, handle)
        items, users = fill(
            handle, args.items, args.users, model.cfg.tower.out_dim, args.seed, version=version
        )
        rnd = random.Random(args.seed)
        reqs = [
            (rnd.choice(users), rnd.sample(items, args.candidates))
            for _ in range(args.requests + args.warmup)
        ]
        env = server_env(settings, tmp / "registry")
        env["LEARNREC_RANKING_WORKERS"] = str(args.workers)
        ours_port, feast_port = free_port(), free_port()
        wanted = servers_of(args.servers)
        targets: dict[str, Target] = {}
        if "ours" in wanted:
            ours = Server(
                "ours",
                [sys.executable, "-m", "learnrec", "serve", "--host", "127.0.0.1",
                 "--port", str(ours_port)],
                env,
                ours_port,
                tmp,
            )  # fmt: skip
            stack.callback(ours.stop)
            ours.wait_ready("/healthz")
            bodies = [rank_body(u, c) for u, c in reqs]
            targets["ours"] = Target(ours_port, "/rank", bodies, None, ours.proc.pid)
            answer = post_json(ours_port, "/rank", bodies[0])
            check_ours(answer, version, args.candidates)
            if "ours_binary" in wanted:
                targets["ours_binary"] = Target(
                    ours_port, "/rank", bodies, MEDIA_TYPE, ours.proc.pid
                )
                check_binary(*post(ours_port, "/rank", bodies[0], MEDIA_TYPE), answer)
        if "feast_server" in wanted:
            feast = Server(
                "feast",
                [
                    "feast", "-c", str(settings.resolved_data_dir()), "serve",
                    "-h", "127.0.0.1", "-p", str(feast_port), "--no-access-log",
                    "-w", str(args.workers), "--max-requests", "0",
                ],
                env,
                feast_port,
                tmp,
            )  # fmt: skip
            stack.callback(feast.stop)
            feast.wait_ready("/health")
            feast_bodies = [feast_body(*versioned(version, u, c)) for u, c in reqs]
            targets["feast_server"] = Target(
                feast_port, "/get-online-features", feast_bodies, None, feast.proc.pid
            )
            check_feast(
                post_json(feast_port, "/get-online-features", feast_bodies[0]), args.candidates
            )
        for t in targets.values():  # warm all: imports, caches, JIT
            closed_loop(t.port, t.path, t.bodies[: args.warmup], 2, t.accept)

        measured = {n: t.bodies[args.warmup :] for n, t in targets.items()}
        rounds = max(1, args.rounds)
        out: dict[str, Any] = {
            "profile": settings.profile,
            "workers": args.workers,
            "model_version": version,
        }
        for c in CONCURRENCY:
            lat: dict[str, list[float]] = {n: [] for n in targets}
            wall: dict[str, float] = dict.fromkeys(targets, 0.0)
            cpu: dict[str, list[float]] = {n: [0.0, 0.0] for n in targets}  # server, client
            for r in range(rounds):  # alternate the servers so that noise hits all alike
                for name, t in targets.items():
                    part = measured[name][r::rounds]
                    # Warm again before each round: while the other servers ran, our
                    # item near-cache expired (docs/ranking.md); every server gets it.
                    if args.round_warmup > 0:
                        closed_loop(t.port, t.path, t.bodies[: args.round_warmup], 2, t.accept)
                    s0, c0 = group_cpu_s(t.pgid), time.process_time()
                    got, w = closed_loop(t.port, t.path, part, c, t.accept)
                    s1, c1 = group_cpu_s(t.pgid), time.process_time()
                    lat[name] += got
                    wall[name] += w
                    cpu[name][0] += (s1 - s0) if s0 is not None and s1 is not None else np.nan
                    cpu[name][1] += c1 - c0
            for name in targets:
                stats = percentiles(lat[name])
                prefix = PREFIX[name]
                for k, v in stats.items():
                    out[f"{prefix}{k}_c{c}"] = v
                n = len(lat[name])
                out[f"{prefix}rps_c{c}"] = n / wall[name]
                out[f"{prefix}requests_c{c}"] = n
                out[f"{prefix}server_cpu_ms_per_req_c{c}"] = 1000 * cpu[name][0] / n
                out[f"{prefix}client_cpu_ms_per_req_c{c}"] = 1000 * cpu[name][1] / n
            if "feast_server" in targets:
                for name in ("ours", "ours_binary"):
                    if name in targets:
                        out[f"{PREFIX[name]}speedup_p99_c{c}"] = (
                            out[f"feast_server_p99_ms_c{c}"] / out[f"{PREFIX[name]}p99_ms_c{c}"]
                        )
        if "ours" in targets:  # one worker's near-cache, as its health check reports it
            out["item_cache"] = get_json(ours_port, "/healthz").get("item_cache")
        return out


@dataclass(frozen=True)
class Target:
    """One measured series: where to send, what, which ``Accept``, whose CPU to count."""

    port: int
    path: str
    bodies: list[bytes]
    accept: str | None
    pgid: int


#: ``ours``: JSON (the default answer); ``ours_binary``: the same server and requests with
#: ``Accept: application/x-learnrec-rank`` (``ranking.wire``); ``feast_server``: Feast's.
SERVERS = ("ours", "ours_binary", "feast_server")
#: Key prefix in the JSON: ``p99_ms_c8`` is the JSON answer's, ``binary_p99_ms_c8`` the compact one's.
PREFIX = {"ours": "", "ours_binary": "binary_", "feast_server": "feast_server_"}


def servers_of(option: str) -> list[str]:
    """``--servers`` as a list; an unknown name fails naming the option (no server starts)."""
    names = [n.strip() for n in option.split(",") if n.strip()]
    bad = [n for n in names if n not in SERVERS]
    if bad or not names:
        raise SystemExit(f"--servers: unknown {bad or option!r}; choose from {', '.join(SERVERS)}")
    if "ours_binary" in names and "ours" not in names:
        names.insert(0, "ours")  # the compact answer is checked against the JSON one
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--requests", type=int, default=1000, help="per server and concurrency")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument(
        "--round-warmup",
        type=int,
        default=50,
        help="unmeasured requests to each server before each of its rounds (0: none)",
    )
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two servers")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="server processes, both servers")
    p.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="which to measure: ours (JSON), ours_binary (compact answer), feast_server",
    )
    p.add_argument("--profile", choices=["auto", "embedded", "production"], default="auto")
    args = p.parse_args(argv)
    servers_of(args.servers)  # a typo fails here, before the store is filled
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("feast").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="learnrec-bench-http-"))
    result: dict[str, Any] = {
        "bench": "http_ranking",
        "machine": machine(),
        "commit": git_commit(),
        "candidates": args.candidates,
    }
    t0 = time.monotonic()
    try:
        result.update(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    write_result(args.out, result)
    load1 = (result["machine"]["loadavg_start"][0], result["machine"]["loadavg_end"][0])
    print(
        f"profile {result['profile']}, {args.workers} worker(s) each, "
        f"load (1 min) {load1[0]:.2f} -> {load1[1]:.2f}, {result['wall_s']} s"
    )
    labels = {
        "ours": "learnrec JSON",
        "ours_binary": "learnrec binary",
        "feast_server": "feast serve",
    }
    for c in CONCURRENCY:
        for name, label in labels.items():
            prefix = PREFIX[name]
            if f"{prefix}p50_ms_c{c}" not in result:
                continue
            print(
                f"c={c} {label:15s} p50 {result[f'{prefix}p50_ms_c{c}']:7.2f} ms  "
                f"p99 {result[f'{prefix}p99_ms_c{c}']:7.2f} ms  "
                f"p99.9 {result[f'{prefix}p999_ms_c{c}']:7.2f} ms  "
                f"{result[f'{prefix}rps_c{c}']:7.1f} req/s  CPU/req server "
                f"{result[f'{prefix}server_cpu_ms_per_req_c{c}']:.2f} ms, client "
                f"{result[f'{prefix}client_cpu_ms_per_req_c{c}']:.2f} ms"
            )
    if result.get("item_cache"):
        print(f"learnrec item near-cache (one worker): {result['item_cache']}")
    for name in ("ours", "ours_binary"):
        if f"{PREFIX[name]}p99_ms_c8" in result:
            p99 = result[f"{PREFIX[name]}p99_ms_c8"]
            print(
                f"target p99 at 8 connections <= 10 ms, {labels[name]}: {p99:.2f} ms, "
                f"{'met' if p99 <= 10 else 'NOT met'}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
