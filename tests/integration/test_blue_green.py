"""Blue/green versions in the online store, on SQLite and on Redis.

Version A serves 3,000 items and 150 users. While reader threads rank against the
registry's pointer, version B is backfilled (every item and user, beside A's rows) and
the pointer switched. Every response must be of one version (its vectors equal that
version's, row for row), with every candidate scorable; a consumer write during the
backfill keeps A fresh and reaches B before the switch; after the switch a consumer
write for an event older than the backfill is readable (Redis drops a write that is not
newer than the stored row); A's rows go only after the grace period.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
