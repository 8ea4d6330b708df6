"""Consumer replicas in their groups, through the real broker and the real CLI (issue 14).

Production profile (Redis: online store and per-user windows; PostgreSQL: offline log):
20,926 synthetic interaction events (360 users of the sample generator) over 8
partitions, read by three ``learnrec consume-interactions`` processes of one group while
two ``learnrec consume-items`` processes of another embed the 500-item catalogue, so
users are held until their items' content lands and are released by whichever replica
owns them by then. Mid-stream one interaction replica is SIGKILLed and, once its
partitions have moved, another is SIGTERMed; a new one joins, and the rest of the
events are produced only after it has.

At the end (``stream_checks.check_stream``): every event is in the offline log exactly
once, every user's embedding equals the batch recomputation from the source events
(1e-5), every user's window in the history store equals the batch window (the
rebalances lost and doubled nothing), nobody is held.

Embedded profile: its files are shared by processes on one host (the history in SQLite
WAL mode with a busy timeout, parquet parts written atomically under digest names, the
online store behind SQLite's file lock), so the same scenario runs on it, smaller:
6,000 sample events with the content written straight into the store.

Time goes to the processes' start-up (torch, Feast, the content model) and to the
30 s session timeout for which a SIGKILLed member holds its partitions.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from feature_repo.store import open_store
from learn_core.datasets import Dataset, load_dataset
from learn_core.datasets.synthetic import generate
from streaming.producer import EventProducer
from streaming.replay import replay
from streaming.settings import KafkaSettings
from streaming.user_sinks import CONTENT_VIEW, open_history_store
from tests.integration.conftest import make_settings
from tests.integration.stream_checks import check_stream, feast_env, teardown
from tests.integration.test_interaction_e2e import KEEP, content_vectors, write_content
from tests.integration.test_poison_pills import Child, cli_env, committed, learnrec

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

PARTITIONS = 8
RATE = 500.0  # events/s: the stream lasts long enough for the faults to land inside it


@dataclass(frozen=True)
class Scenario:
    events: Dataset
    item_replicas: int  # 0: the content is written straight into the store


def scenario(profile: str) -> Scenario:
    if profile == "production":
        ds, _ = generate(n_users=360, name="synthetic-360")
        assert len(ds.interactions) >= 20_000
        return Scenario(ds, item_replicas=2)
    ds = load_dataset("sample")
    return Scenario(Dataset(ds.name, ds.items, ds.interactions.iloc[:6000]), item_replicas=0)


def group_size(bootstrap: str, group: str) -> int:
    """Members of a group that is stable (0 while it rebalances or before it forms)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        info = admin.describe_groups([group])[group]
    except KafkaError:
        return 0
    finally:
        admin.close()
    return len(info["members"]) if info.get("group_state") == "Stable" else 0


def wait_until(
    cond: Callable[[], bool], timeout_s: float, what: str, children: list[Child]
) -> None:
    """Poll ``cond``; fail at once, with its output, if a replica exits unasked."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        for c in children:
            if c.proc.poll() is not None:
                raise AssertionError(
                    f"a replica exited {c.proc.returncode} while waiting for {what}:\n{c.stderr}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.5)


class PacedProducer:
    """Produces on a thread: the catalogue if ``items``, then the interactions at ``RATE``,
    ``first`` of them, and once ``gate`` is set the rest.

    The interactions start while the item consumers still embed the catalogue, so some
    users wait for content (held) and are released later, by whoever owns them then.
    """

    def __init__(self, ds: Dataset, k: KafkaSettings, first: int, items: bool) -> None:
        self.ds, self.k, self.first, self.items = ds, k, first, items
        self.gate = threading.Event()
        self.cancelled = False
        self.sent = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _part(self, producer: EventProducer, lo: int, hi: int) -> None:
        part = Dataset(self.ds.name, self.ds.items, self.ds.interactions.iloc[lo:hi])
        self.sent += replay(part, producer, items=False, rate=RATE).interactions

    def _run(self) -> None:
        try:
            assert self.k.bootstrap_servers
            with EventProducer(self.k.bootstrap_servers, self.k) as producer:
                if self.items:
                    replay(self.ds, producer, interactions=False)
                self._part(producer, 0, self.first)
                if self.gate.wait(600) and not self.cancelled:
                    self._part(producer, self.first, len(self.ds.interactions))
        except BaseException as exc:  # noqa: BLE001 - surfaced by join()
            self.error = exc

    def cancel(self) -> None:
        self.cancelled = True
        self.gate.set()

    def join(self) -> None:
        self.thread.join(120)
        if self.error is not None:
            raise self.error
        assert self.sent == len(self.ds.interactions), self.sent


def test_replicas_share_the_stream_through_kill_stop_and_join(
    kafka_bootstrap: str,
    topic_factory,
    tmp_path: Path,
    feast_profile: str,
) -> None:
    sc = scenario(feast_profile)
    ds, n = sc.events, len(sc.events.interactions)
    handle = open_store(make_settings(feast_profile, tmp_path / "feast"))  # applied once, here
    history = open_history_store(handle)  # the test's own view of the windows
    children: list[Child] = []
    producer: PacedProducer | None = None
    try:
        topics = {
            "interactions": topic_factory("inter", partitions=PARTITIONS, configs=KEEP),
            "items": topic_factory("items", partitions=max(1, sc.item_replicas), configs=KEEP),
            "dlq": topic_factory("dlq"),
        }
        k = KafkaSettings(
            bootstrap_servers=kafka_bootstrap,
            interactions_topic=topics["interactions"],
            items_topic=topics["items"],
            dlq_topic=topics["dlq"],
        )
        item_group, group = f"gi-{uuid.uuid4().hex[:8]}", f"gu-{uuid.uuid4().hex[:8]}"
        env = cli_env(tmp_path, topics, kafka_bootstrap, item_group)
        env.update(feast_env(handle.settings), LEARNREC_INTERACTION_CONSUMER_GROUP_ID=group)

        if not sc.item_replicas:
            write_content(handle, content_vectors(ds.item_ids))
        item_children = [Child(learnrec("consume-items"), env) for _ in range(sc.item_replicas)]
        children += item_children
        a, b, c = (Child(learnrec("consume-interactions"), env) for _ in range(3))
        children += [a, b, c]
        wait_until(lambda: group_size(kafka_bootstrap, group) == 3, 300, "3 members", children)
        t0 = time.monotonic()
        log.info("3 interaction replicas in the group")
        if sc.item_replicas:
            wait_until(
                lambda: group_size(kafka_bootstrap, item_group) == sc.item_replicas,
                300,
                "the item consumers",
                children,
            )

        producer = PacedProducer(ds, k, first=int(n * 0.65), items=bool(sc.item_replicas))
        wait_until(lambda: committed(kafka_bootstrap, group) >= n * 0.2, 180, "20%", children)
        log.info("users held for content now: %d", len(history.held(None)))
        a.proc.send_signal(signal.SIGKILL)  # its partitions wait for its session to expire
        log.info(
            "+%.0fs SIGKILL a at %d committed",
            time.monotonic() - t0,
            committed(kafka_bootstrap, group),
        )
        a.wait(30)
        children.remove(a)
        wait_until(lambda: group_size(kafka_bootstrap, group) == 2, 120, "a to expire", children)
        log.info("+%.0fs a's partitions moved to b and c", time.monotonic() - t0)
        wait_until(lambda: committed(kafka_bootstrap, group) >= n * 0.45, 180, "45%", children)
        children.remove(b)
        log.info("+%.0fs SIGTERM b", time.monotonic() - t0)
        assert b.stop(signal.SIGTERM, 120) == 0, b.stderr
        assert "consumed " in b.stdout and "Traceback" not in b.stderr, b.stderr
        d = Child(learnrec("consume-interactions"), env)
        children.append(d)
        wait_until(lambda: group_size(kafka_bootstrap, group) == 2, 300, "c and d", children)
        producer.gate.set()  # the rest of the stream goes to c and d
        log.info("+%.0fs d joined; producing the rest", time.monotonic() - t0)
        producer.join()
        wait_until(lambda: committed(kafka_bootstrap, group) == n, 180, "all commits", children)
        if sc.item_replicas:
            items = len(ds.items)
            wait_until(
                lambda: committed(kafka_bootstrap, item_group) == items, 300, "items", children
            )
        log.info("+%.0fs all %d events committed", time.monotonic() - t0, n)
        # A late item's users are released by their owner's idle re-check (every 1 s).
        wait_until(lambda: not history.held(None), 60, "held users released", children)
        for child in list(children):
            children.remove(child)
            assert child.stop(signal.SIGTERM, 120) == 0, child.stderr
        for child in (d, *item_children):  # each had work
            assert "Traceback" not in child.stderr, child.stderr
            assert int(child.stdout.split("consumed ")[1].split()[0]) > 0, child.stdout
        for child in (b, c, d):  # rebalances and a SIGKILL are no store going back
            assert "online store went back" not in child.stderr, child.stderr[-3000:]

        log.info(
            "+%.0fs replicas stopped; replica summaries: %s",
            time.monotonic() - t0,
            [x.stdout.strip() for x in (b, c, d, *item_children)],
        )
        rows = handle.read_embeddings(CONTENT_VIEW, ds.item_ids)
        assert rows.found.all()
        content = {i: rows.vectors[r] for r, i in enumerate(rows.ids)}
        assert all(np.isfinite(v).all() for v in content.values())
        check_stream(handle, ds.interactions, content)
    finally:
        if producer is not None:
            producer.cancel()
        for child in children:
            child.proc.kill()
            child.wait(30)
        history.close()
        teardown(handle)
