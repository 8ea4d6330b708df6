"""Child processes of ``bench.streaming``: consumer replicas and a paced producer.

    python -m bench.streaming_procs replica --topic T --group G --project P ...
    python -m bench.streaming_procs producer --topic T --rate R --seconds S ...

Both speak a line protocol on stdout (lines starting with ``BENCH ``; everything else,
e.g. a library's print, is ignored) and wait for ``go`` on stdin, so that the parent
starts the clock only once every process has loaded torch/Feast and joined its group.

* **replica**: the interaction consumer of ``bench.streaming`` (same wiring, same
  settings) in its own process. It joins group ``G`` on an empty topic, reports
  ``ready`` once it owns ``partitions / replicas`` partitions (so the group is complete
  and no rebalance happens mid-measurement), waits for ``go`` (sent after the parent
  has produced the events), consumes its share (its partitions' end offsets) and
  reports ``{"t0", "t1", "records"}`` in wall-clock seconds (one machine, one clock).
* **producer**: replays the data set at ``rate`` events/s for ``seconds``, cycling it
  with fresh event ids (``f<round>-<id>``) and occurred_at restamped to now, so that
  every event changes its user's window and is written (a freshness sample). A
  separate process, as a real producer is: in the consumer's process its Python work
  would share the consumer's GIL.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger("bench.streaming")

PREFIX = "BENCH "


def say(obj: Any) -> None:
    """One protocol line on stdout."""
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def fresh_frame(interactions: pd.DataFrame, n: int, tag: str) -> pd.DataFrame:
    """``n`` interaction rows: the data set cycled, event ids unique per ``tag`` and round.

    Unique across the runs of one bench too: a reused id with other content (the
    restamped time) would be refused as a conflict and dead-lettered.
    """
    reps = -(-n // len(interactions))
    parts = []
    for r in range(reps):
        df = interactions.copy()
        df["event_id"] = f"f{tag}.{r}-" + df["event_id"].astype(str)
        parts.append(df)
    return pd.concat(parts, ignore_index=True).iloc[:n]


# --------------------------------------------------------------------------- children


def _kafka(topic: str) -> Any:
    from learn_core.settings import load
    from streaming.settings import KafkaSettings

    return load(KafkaSettings).model_copy(
        update=dict(
            interactions_topic=topic, items_topic=f"{topic}-items", dlq_topic=f"{topic}-dlq"
        )
    )


def replica_main(a: argparse.Namespace) -> int:
    from bench.streaming import _consumer
    from feature_repo.settings import FeastSettings
    from feature_repo.store import open_store
    from learn_core.settings import load
    from streaming.item_consumer import close_loop
    from streaming.kafka_io import resolve_bootstrap
    from streaming.user_sinks import open_history_store

    k = _kafka(a.topic)
    bootstrap = resolve_bootstrap(k)
    handle = open_store(load(FeastSettings, project=a.project, data_dir=a.data_dir))
    history = open_history_store(handle)
    loop, handler = _consumer(bootstrap, k, handle, history, a.group, a.max_batch)
    try:
        deadline = time.monotonic() + a.timeout
        while len(loop.assignment) != a.own and time.monotonic() < deadline:
            loop.step()  # the topic is empty: this only joins (and rebalances) the group
        if len(loop.assignment) != a.own:
            raise SystemExit(f"owned {len(loop.assignment)} partitions, expected {a.own}")
        say({"ready": sorted(tp.partition for tp in loop.assignment)})
        if sys.stdin.readline().strip() != "go":
            return 1
        share = sum(loop.consumer.end_offsets(list(loop.assignment)).values())
        t0: float | None = None
        deadline = time.monotonic() + a.timeout
        while loop.stats.records < share and time.monotonic() < deadline:
            before = time.time()
            if loop.step() and t0 is None:
                t0 = before
        t1 = time.time()
        say({"t0": t0, "t1": t1, "records": loop.stats.records})
        return 0 if loop.stats.records >= share else 1
    finally:
        close_loop(loop)
        history.close()
        handle.close()


def producer_main(a: argparse.Namespace) -> int:
    from learn_core.datasets import load_dataset
    from streaming.kafka_io import resolve_bootstrap
    from streaming.producer import EventProducer
    from streaming.replay import replay

    k = _kafka(a.topic)
    ds = load_dataset(a.dataset, a.data_path)
    n = int(a.rate * a.seconds)
    fds = type(ds)(ds.name, ds.items, fresh_frame(ds.interactions, n, a.topic))
    with EventProducer(resolve_bootstrap(k), k) as producer:
        say({"ready": n})
        if sys.stdin.readline().strip() != "go":
            return 1
        st = replay(fds, producer, items=False, rate=a.rate, restamp=True)
    say({"sent": st.interactions, "rate": st.events_per_s})
    return 0


# ----------------------------------------------------------------------------- parent


class Child:
    """A child process of this module, driven through its line protocol."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "bench.streaming_procs", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def read(self) -> dict[str, Any]:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX) :])
        raise RuntimeError(f"bench child exited ({self.p.wait()}) without answering")

    def go(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def close(self, timeout: float = 60) -> None:
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def child_env(bootstrap: str) -> dict[str, str]:
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def replica_rate(
    bootstrap: str, ds: Any, n: int, replicas: int, tag: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Events/s of ``replicas`` consumer processes of one group over a fresh topic and store."""
    import shutil
    import tempfile

    from bench.streaming import _content
    from feature_repo.settings import FeastSettings
    from feature_repo.store import forget_project, open_store
    from learn_core.settings import load
    from streaming.admin import create_topics, delete_topics
    from streaming.producer import EventProducer
    from streaming.replay import replay

    if args.partitions % replicas:
        raise SystemExit(f"--replicas {replicas} must divide --partitions {args.partitions}")
    k = _kafka(f"bench-inter-{tag}-r{replicas}")
    create_topics(
        bootstrap,
        [k.interactions_topic],
        partitions=args.partitions,
        configs={"retention.ms": "-1"},
    )
    create_topics(bootstrap, [k.items_topic, k.dlq_topic], partitions=1)
    data_dir = Path(tempfile.mkdtemp(prefix="learnrec-bench-r-"))
    project = f"bench_{tag}_r{replicas}"
    handle = open_store(load(FeastSettings, project=project, data_dir=data_dir))
    _content(handle, ds.item_ids, 384)
    handle.close()
    env = child_env(bootstrap)
    own = args.partitions // replicas
    cmd = ["replica", "--topic", k.interactions_topic, "--group", f"bench-{tag}-r{replicas}"]
    cmd += ["--project", project, "--data-dir", str(data_dir), "--own", str(own)]
    cmd += ["--max-batch", str(args.max_batch), "--timeout", str(args.timeout)]
    children = [Child(cmd, env) for _ in range(replicas)]
    try:
        # One at a time: each "ready" means that child owns its final share.
        for c in children:
            c.read()
        with EventProducer(bootstrap, k) as producer:
            replay(ds, producer, items=False, limit=n)
        for c in children:
            c.go()
        got = [c.read() for c in children]
    finally:
        for c in children:
            c.close()
        delete_topics(bootstrap, [k.interactions_topic, k.items_topic, k.dlq_topic])
        shutil.rmtree(data_dir, ignore_errors=True)
        forget_project(handle.settings)  # production: its registry rows slow later stores
    records = sum(g["records"] for g in got)
    assert records >= n, f"replicas handled {records}/{n}"
    start = min(g["t0"] for g in got)
    seconds = max(g["t1"] for g in got) - start
    return {
        "replicas": replicas,
        "events_per_s": round(n / seconds, 1),
        "per_replica_records": [g["records"] for g in got],
        # each replica's first record and last write, seconds after the earliest first record
        "per_replica_span_s": [[round(g["t0"] - start, 3), round(g["t1"] - start, 3)] for g in got],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role", required=True)
    r = sub.add_parser("replica")
    r.add_argument("--topic", required=True)
    r.add_argument("--group", required=True)
    r.add_argument("--project", required=True)
    r.add_argument("--data-dir", type=Path, required=True)
    r.add_argument("--own", type=int, required=True, help="partitions this replica will own")
    r.add_argument("--max-batch", type=int, default=10_000)
    r.add_argument("--timeout", type=float, default=900.0)
    q = sub.add_parser("producer")
    q.add_argument("--topic", required=True)
    q.add_argument("--rate", type=float, required=True)
    q.add_argument("--seconds", type=float, required=True)
    q.add_argument("--dataset", default="sample")
    q.add_argument("--data-path", default=None)
    a = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return replica_main(a) if a.role == "replica" else producer_main(a)


if __name__ == "__main__":
    raise SystemExit(main())
