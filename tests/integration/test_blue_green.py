"""Blue/green versions in the online store, on SQLite and on Redis.

Version A serves 3,000 items and 150 users. While reader threads rank against the
registry's pointer, version B is backfilled (every item and user, beside A's rows) and
the pointer switched. Every response must be of one version (its vectors equal that
version's, row for row), with every candidate scorable; a consumer write during the
backfill keeps A fresh and reaches B before the switch; after the switch a consumer
write for an event older than the backfill is readable (Redis drops a write that is not
newer than the stored row); A's rows go only after the grace period.

With the streams flowing (issue 25.3): ``run-job retrain`` switches twice while both
consumers take new items, new users and interactions from the broker and ``/rank`` is
polled; nothing known before a switch is ``unknown``, missing or older after it.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from feature_repo.schema import INTERACTION_LOG, ITEM_CONTENT, ITEM_TOWER, USER_TOWER
from feature_repo.store import FeatureStoreHandle
from learn_core.events import Interaction
from learn_core.history import windows_from_log
from learn_core.inference import item_tower_rows, user_tower_rows
from learn_core.models import LearnConfig, LearnModel, TowerConfig
from learn_core.registry import ModelRegistry
from learn_core.serving import ModelCache, RegistryTowers, as_serving
from ranking.core import OK
from ranking.reader import RankingReader
from ranking.settings import RankingSettings
from streaming.consumer import Accepted
from streaming.dead_letter import SourceRef
from streaming.interaction_consumer import InteractionConsumerSettings, InteractionHandler
from streaming.user_sinks import ContentLookup, FeastUserSink, MemoryHistoryStore
from trainers.jobs.backfill import backfill, catch_up, purge_retired

pytestmark = pytest.mark.integration

T = pd.Timestamp("2024-03-01", tz="UTC")
CONTENT_MODEL = "tiny-encoder@0123456789abcdef"
DIM, H, N_ITEMS, N_USERS, CANDIDATES = 16, 8, 3000, 150, 100


def _content(items: list[str]) -> dict[str, np.ndarray]:
    v = np.random.default_rng(0).standard_normal((len(items), DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return dict(zip(items, v, strict=True))


def _log(items: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        [
            {
                "event_id": f"e{u}-{n}",
                "user_id": f"u{u}",
                "item_id": items[int(rng.integers(len(items)))],
                "event_type": "click",
                "value": np.nan,
                "event_timestamp": T + pd.Timedelta(minutes=u + 200 * n),
            }
            for u in range(N_USERS)
            for n in range(6)
        ]
    )


def _model(seed: int) -> LearnModel:
    torch.manual_seed(seed)
    return LearnModel(LearnConfig(tower=TowerConfig(content_dim=DIM))).eval()


def _expected(model, items, content, log) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:  # noqa: ANN001
    """The vectors a version's rows must hold: item id -> vector, user id -> vector."""
    it = item_tower_rows(model, items, np.stack([content[i] for i in items]), T)
    us = user_tower_rows(model, log, content, H, T).rows
    return dict(zip(it["item_id"], it["embedding"], strict=True)), dict(
        zip(us["user_id"], us["embedding"], strict=True)
    )


class Readers:
    """Threads ranking known users against known items until stopped; they count faults."""

    def __init__(self, reader: RankingReader, users, items, expected, n: int = 2) -> None:  # noqa: ANN001
        self.reader, self.users, self.items, self.expected = reader, users, items, expected
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.versions: dict[str, int] = {}
        self.mixed = self.not_ok = self.errors = 0
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(n)]

    def _run(self, seed: int) -> None:
        rnd = random.Random(seed)
        while not self.stop.is_set():
            user, cands = rnd.choice(self.users), rnd.sample(self.items, CANDIDATES)
            try:
                res = self.reader.rank(user, cands)
            except Exception:  # counted, and the test fails on it
                with self.lock:
                    self.errors += 1
                continue
            items_of, users_of = self.expected[res.model_version]
            want = np.stack([items_of[i] for i in cands])
            mixed = not (
                np.allclose(res.item_embeddings, want, atol=1e-5)
                and np.allclose(res.user_embedding, users_of[user], atol=1e-5)
            )
            with self.lock:
                self.versions[res.model_version] = self.versions.get(res.model_version, 0) + 1
                self.mixed += mixed
                self.not_ok += sum(s != OK for s in res.status)

    def __enter__(self) -> Readers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def _event(user: str, item: str, when: datetime, k: int) -> Accepted:
    ev = Interaction(
        event_id=f"late-{user}-{k}",
        user_id=user,
        item_id=item,
        event_type="click",
        occurred_at=when,
    )
    return Accepted(ev, SourceRef("t", 0, k, None))


def test_backfill_beside_the_serving_version_under_concurrent_reads(
    feast_handle: FeatureStoreHandle, tmp_path: Path
) -> None:
    h = feast_handle
    items = [f"i{n:04d}" for n in range(N_ITEMS)]
    content = _content(items)
    crows = pd.DataFrame(
        {
            "item_id": items,
            "embedding": [content[i] for i in items],
            "model_version": CONTENT_MODEL,
            "event_timestamp": T,
        }
    )
    h.append_offline(ITEM_CONTENT.name, crows)
    h.write_online(ITEM_CONTENT.name, crows)
    log = _log(items)
    h.append_offline(INTERACTION_LOG.name, log)
    users = sorted(set(log["user_id"]))

    reg = ModelRegistry(tmp_path / "registry")
    a = reg.save(_model(1), content_model=CONTENT_MODEL)
    b = reg.save(_model(2), content_model=CONTENT_MODEL)
    model_a, model_b = (as_serving(v, reg.load(v)) for v in (a, b))
    backfill(h, model_a, history_len=H)
    reg.promote(a)
    expected = {v: _expected(m, items, content, log) for v, m in ((a, model_a), (b, model_b))}

    # The interaction consumer's handler on the registry's current tower (A, then B).
    history = MemoryHistoryStore()
    history.rows.update(windows_from_log(log, H))
    sink = FeastUserSink(h)
    handler = InteractionHandler(
        RegistryTowers(reg),
        history,
        ContentLookup(sink.read_content, 10_000, DIM),
        sink,
        InteractionConsumerSettings(history_len=H, reload_check_s=0),
    )
    reader = RankingReader(
        h,
        ModelCache(reg, check_s=0),
        RankingSettings(),
        retrieval=object(),  # type: ignore[arg-type]
    )
    fresh_user = users[0]
    with Readers(reader, users[1:], items, expected) as readers:
        bf = backfill(h, model_b, history_len=H)
        # A consumer batch while B is a candidate: A's row moves on, B's is caught up.
        when = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        handler([_event(fresh_user, items[5], when, 1)])
        got_a = h.read_embeddings(USER_TOWER.name, [fresh_user], model_version=a)
        assert pd.Timestamp(got_a.event_timestamp[0]).value // 10**6 == int(when.timestamp() * 1000)
        fixed, _ = catch_up(h, model_b, since=datetime.fromisoformat(bf.watermark), history_len=H)
        assert fixed >= 1
        reg.promote(b)
        while readers.versions.get(b, 0) < 20:  # some reads of B after the switch
            assert not readers.errors, readers.errors
            threading.Event().wait(0.05)
    assert readers.versions.get(a, 0) >= 20, readers.versions
    assert readers.errors == 0
    assert readers.mixed == 0
    assert readers.not_ok == 0
    got_b = h.read_embeddings(USER_TOWER.name, [fresh_user], model_version=b)
    assert got_b.found[0] and got_b.extra["history_len"] == got_a.extra["history_len"]

    # After the backfill (stamped at the user's newest logged event, not at the backfill
    # time), a consumer write for an event older than the backfill is readable.
    late = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    assert late < datetime.fromisoformat(bf.watermark)
    before = h.read_embeddings(USER_TOWER.name, [users[1]], model_version=b)
    handler([_event(users[1], items[9], late, 2)])
    assert handler.model is not None and handler.model.version == b
    after = h.read_embeddings(USER_TOWER.name, [users[1]], model_version=b)
    assert pd.Timestamp(after.event_timestamp[0]).value // 10**6 == int(late.timestamp() * 1000)
    assert not np.allclose(after.vectors, before.vectors)
    res = reader.rank(users[1], items[:CANDIDATES])
    assert res.model_version == b and res.status == [OK] * CANDIDATES
    np.testing.assert_array_equal(res.user_embedding, after.vectors[0])

    # A's rows stay for the grace period, then go; B's stay.
    assert purge_retired(h, reg, grace_s=3600) == []
    (a_items,) = h.online.read_vectors([(ITEM_TOWER.name, items)], a)
    assert a_items.ok.all()
    assert purge_retired(h, reg, grace_s=0) == [a]
    gone = h.online.read_vectors([(USER_TOWER.name, users), (ITEM_TOWER.name, items)], a)
    assert not gone[0].ok.any() and not gone[1].ok.any()
    kept = h.online.read_vectors([(USER_TOWER.name, users), (ITEM_TOWER.name, items)], b)
    assert kept[0].ok.all() and kept[1].ok.all()
    assert reg.retired() == {}


# --------------------------------------------------- switches while the streams flow


class SwitchWatch:
    """Around each ``promote``: which new items and users the serving version holds just
    before the switch, and whether the new version holds them (as new) just after it."""

    def __init__(self, handle: FeatureStoreHandle, live_items: list[str], users: list[str]) -> None:
        self.handle, self.live_items, self.users = handle, live_items, users
        self.known_items: set[str] = set()
        self.known_users: set[str] = set()
        #: (old, new, new items known, users known, of them new users: partial rows)
        self.switches: list[tuple[str, str, int, int, int]] = []
        self.faults: list[str] = []

    def stamps(self, version: str, users: list[str]) -> dict[str, pd.Timestamp]:
        got = self.handle.read_embeddings(USER_TOWER.name, users, model_version=version)
        return {
            u: pd.Timestamp(t)
            for u, t, f in zip(users, got.event_timestamp, got.found, strict=True)
            if f
        }

    def wrap(self, promote):  # noqa: ANN001, ANN201
        def around(registry: ModelRegistry, version: str) -> None:
            old = registry.current_version()
            if old is None:
                return promote(registry, version)
            items, users = list(self.live_items), list(self.users)
            got = self.handle.read_embeddings(ITEM_TOWER.name, items, model_version=old)
            before_items = [i for i, f in zip(items, got.found, strict=True) if f]
            before_users = self.stamps(old, users)
            self.known_items.update(before_items)
            self.known_users.update(before_users)
            promote(registry, version)
            after = self.handle.read_embeddings(
                ITEM_TOWER.name, before_items, model_version=version
            )
            lost = [i for i, f in zip(before_items, after.found, strict=True) if not f]
            now = self.stamps(version, list(before_users))
            older = [u for u, t in before_users.items() if u not in now or now[u] < t]
            self.faults += [f"{version}: item {i} unknown after the switch" for i in lost]
            self.faults += [f"{version}: user {u} missing or older after the switch" for u in older]
            new_users = sum(u.startswith("live-u") for u in before_users)
            self.switches.append((old, version, len(before_items), len(before_users), new_users))

        return around


class RankPoller:
    """Polls ``POST /rank`` in a thread; an id it has once seen scored (or that a switch
    found known) must never come back ``unknown``, nor a known user 404."""

    def __init__(self, client, watch: SwitchWatch, sample_items: list[str]) -> None:  # noqa: ANN001
        self.client, self.watch, self.sample_items = client, watch, sample_items
        self.stop = threading.Event()
        self.versions: dict[str, int] = {}
        self.unknown_known_items: list[tuple[str, str]] = []
        self.unknown_known_users: list[str] = []
        self.answers = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rnd = random.Random(3)
        w = self.watch
        while not self.stop.is_set():
            user = rnd.choice(w.users)
            live = list(w.live_items)
            cands = rnd.sample(live, min(80, len(live))) + rnd.sample(self.sample_items, 20)
            known_items, known_users = set(w.known_items), set(w.known_users)
            resp = self.client.post("/rank", json={"user_id": user, "item_ids": cands})
            if resp.status_code == 404:
                if user in known_users:
                    self.unknown_known_users.append(user)
                continue
            assert resp.status_code == 200, resp.text
            body = resp.json()
            self.answers += 1
            v = body["model_version"]
            self.versions[v] = self.versions.get(v, 0) + 1
            w.known_users.add(user)
            for it in body["items"]:
                if it["status"] == OK:
                    w.known_items.add(it["item_id"])
                elif it["item_id"] in known_items:
                    self.unknown_known_items.append((v, it["item_id"]))
            time.sleep(0.01)


def _stale_users(handle: FeatureStoreHandle, registry: ModelRegistry) -> list[str]:
    """Users whose row of the serving version is not the batch function of the log."""
    from trainers.jobs.backfill import latest_content

    version = registry.current_version()
    assert version is not None
    model = as_serving(version, registry.load(version))
    log = handle.read_offline(INTERACTION_LOG.name)
    want = user_tower_rows(model, log, latest_content(handle), 50, T, partial=True).rows
    ids = list(want["user_id"])
    got = handle.read_embeddings(USER_TOWER.name, ids, model_version=version)
    vecs = np.stack(want["embedding"])
    return [
        u
        for u, f, g, w in zip(ids, got.found, got.vectors, vecs, strict=True)
        if not f or np.abs(g - w).max() > 1e-5
    ]


def test_switches_while_items_and_interactions_flow_hide_nothing(
    kafka_bootstrap: str, topic_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25.3: ``run-job retrain`` promotes twice while new items, new users and
    interactions stream in and ``/rank`` is polled. No item or user known before a switch
    (scored by ``/rank``, or holding a row of the serving version just before the
    switch) is ``unknown``, missing or older after it."""
    from fastapi.testclient import TestClient

    from feature_repo.store import open_store
    from learn_core.datasets import load_dataset
    from learnrec.pipeline import Pipeline
    from ranking.service import create_app
    from streaming.producer import EventProducer
    from streaming.replay import replay
    from tests.integration.conftest import make_settings
    from tests.integration.test_e2e import embedder, kafka
    from trainers.jobs.scheduler import run_job

    ds = load_dataset("sample")
    first = 2000
    k = kafka(kafka_bootstrap, topic_factory)
    feast = make_settings("embedded", tmp_path / "feast")
    env = {
        "LEARNREC_FEAST_PROFILE": "embedded",
        "LEARNREC_FEAST_PROJECT": feast.project,
        "LEARNREC_FEAST_DATA_DIR": str(feast.resolved_data_dir()),
        "LEARNREC_REGISTRY_ROOT": str(tmp_path / "registry"),
        "LEARNREC_RETRAIN_EPOCHS": "1",
        "LEARNREC_RETRAIN_PATIENCE": "1",
        "LEARNREC_RETRAIN_WINDOWS_PER_USER": "2",
        "LEARNREC_RETRAIN_CVR_EPOCHS": "1",
        # Longer than both consumers' pointer checks (0.3 s and 0.2 s below).
        "LEARNREC_RETRAIN_CATCHUP_DELAY_S": "1.0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    registry = ModelRegistry(tmp_path / "registry")
    pipe = Pipeline(kafka_bootstrap, k, feast, registry, embedder(), reload_check_s=0.3)
    pipe.start()
    handle, watch_handle = open_store(feast), open_store(feast)
    items = [it.item_id for it in ds.items]
    users = sorted(set(ds.interactions["user_id"].iloc[:first]))
    live_items: list[str] = []
    watch = SwitchWatch(watch_handle, live_items, users)
    stop = threading.Event()
    try:
        with EventProducer(kafka_bootstrap, k) as producer:
            replay(ds, producer, limit=first)
        pipe.wait_for(len(items), first, timeout_s=120)
        out = run_job("retrain", force=True)
        assert out.get("promoted"), out
        monkeypatch.setattr(ModelRegistry, "promote", watch.wrap(ModelRegistry.promote))
        client = TestClient(
            create_app(RankingReader(handle, registry, RankingSettings(version_check_s=0.0)))
        )
        poller = RankPoller(client, watch, items)

        def stream() -> None:
            """New items, interactions of known and new users on them, ~10 items/s. Every
            new user also clicks an item that is never created: it is embedded without it
            after the consumer's hold (a partial row), which a switch must keep too."""
            rnd, n = random.Random(7), 0
            with EventProducer(kafka_bootstrap, k) as p:
                while not stop.is_set():
                    item = f"live-{n:04d}"
                    p.send(
                        ds.items[n % len(ds.items)].model_copy(
                            update={
                                "item_id": item,
                                "title": f"{ds.items[n % len(ds.items)].title} {n}",
                                "created_at": datetime.now(UTC),
                            }
                        )
                    )
                    scored = sorted(watch.known_items) or items
                    for j in range(4):
                        user = f"live-u{n // 10:03d}" if j == 0 else rnd.choice(users)
                        item_id = rnd.choice(scored if j % 2 else items)
                        if j == 0 and n % 10 == 0:
                            item_id = f"ghost-{n:04d}"  # never created
                        p.send(
                            Interaction(
                                event_id=f"live-{n}-{j}",
                                user_id=user,
                                item_id=item_id,
                                event_type="click",
                                occurred_at=datetime.now(UTC),
                            )
                        )
                    p.flush()
                    live_items.append(item)
                    if n % 10 == 9:
                        watch.users.append(f"live-u{n // 10:03d}")
                    n += 1
                    time.sleep(0.1)

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        poller.thread.start()
        time.sleep(2.0)
        for _ in range(2):
            out = run_job("retrain", force=True)
            assert out.get("promoted"), out
        # Answers of the last version, after its switch: waited for, not slept for (on 2
        # loaded cores a /rank answer can take 100 ms+, and 1.5 s once gave fewer than 5).
        last, deadline = registry.current_version(), time.monotonic() + 60
        while poller.versions.get(last, 0) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        streamer.join(timeout=30)
        poller.stop.set()
        poller.thread.join(timeout=30)
        # Nothing stale at the end, at full precision (SQLite keeps whole seconds): once
        # the consumers are idle and the holds are over, every user's row of the serving
        # version is the batch function of the log.
        deadline, stale = time.monotonic() + 60, ["not checked"]
        while stale and time.monotonic() < deadline:
            time.sleep(1.0)
            stale = _stale_users(watch_handle, registry)
    finally:
        stop.set()
        pipe.close()
        handle.close()
        watch_handle.close()
    assert stale == [], f"{len(stale)} users stale at the end: {stale[:5]}"
    assert len(watch.switches) == 2, watch.switches
    assert all(s[2] >= 5 and s[4] >= 1 for s in watch.switches), watch.switches
    assert len(poller.versions) == 3 and min(poller.versions.values()) >= 5, poller.versions
    print(
        f"\nswitches {watch.switches}; /rank answers {poller.answers} by version "
        f"{poller.versions}; unknown answers for known items {len(poller.unknown_known_items)}, "
        f"404 for known users {len(poller.unknown_known_users)}"
    )
    assert watch.faults == [], f"{len(watch.faults)} at the switches: {watch.faults[:8]}"
    assert poller.unknown_known_items == [], f"{len(poller.unknown_known_items)} unknown answers"
    assert poller.unknown_known_users == [], f"{len(poller.unknown_known_users)} 404s"


def test_repair_rewrites_a_candidate_row_that_lost_a_race(
    feast_handle: FeatureStoreHandle,
) -> None:
    """The last replay's check (``trainers.jobs.switch.repair_users``): a candidate row older
    than the window the serving row was made from is rewritten; a user whose serving row
    is itself behind the log is left to the consumers. By vectors, not event times, which
    SQLite keeps in whole seconds."""
    from trainers.jobs.backfill import write_rows
    from trainers.jobs.switch import repair_users

    h = feast_handle
    items = [f"i{n:04d}" for n in range(300)]
    content = _content(items)
    log = _log(items)
    h.append_offline(INTERACTION_LOG.name, log)
    a, b = as_serving("m-a", _model(1)), as_serving("m-b", _model(2))
    lost, behind, fine = "u0", "u1", "u2"
    users = {lost, behind, fine}
    newest = log[log["user_id"].isin(users)]
    older = newest.drop(newest.groupby("user_id")["event_timestamp"].idxmax())

    def put(model, frame, who: set[str]) -> None:  # noqa: ANN001
        rows, _, stamps = user_tower_rows(model, frame, content, H, T, users=who)
        write_rows(h, USER_TOWER.name, rows, online_ts=stamps.reset_index(drop=True))

    put(a, newest, {lost, fine})
    put(a, older, {behind})  # the consumer has not written this user's newest event yet
    put(b, older, {lost, behind})  # ``lost``: a replay's older row won over the consumer's
    put(b, newest, {fine})
    assert repair_users(h, b, a, sorted(users), content, H) == 1
    want_new = user_tower_rows(b, newest, content, H, T, users=users).rows.set_index("user_id")
    want_old = user_tower_rows(b, older, content, H, T, users=users).rows.set_index("user_id")
    got = h.read_embeddings(USER_TOWER.name, [lost, behind, fine], model_version="m-b")
    np.testing.assert_allclose(got.vectors[0], want_new.loc[lost, "embedding"], atol=1e-5)
    np.testing.assert_allclose(got.vectors[1], want_old.loc[behind, "embedding"], atol=1e-5)
    np.testing.assert_allclose(got.vectors[2], want_new.loc[fine, "embedding"], atol=1e-5)
