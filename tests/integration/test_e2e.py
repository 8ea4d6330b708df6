"""End to end, in the issue's order, through the real broker and a real (embedded) Feast:

1. events; 2. both consumers; 3. first training, backfill and promotion; 4. the ranking
reader returns a single version; 5. more events, retraining and a version switch while
reader threads keep querying -- and no response mixes versions.

The content model is the real one (all-MiniLM-L6-v2 through the CEG disk cache). The
model registry is an in-memory implementation of the registry port, so this test does
not depend on the registry's storage format.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from learn_core.datasets import load_dataset
from learn_core.registry import ModelRegistry
from learnrec.pipeline import Pipeline
from ranking.core import OK, UnknownUserError
from ranking.reader import RankingReader
from ranking.settings import RankingSettings
from streaming.producer import EventProducer
from streaming.replay import replay
from streaming.settings import KafkaSettings
from tests.integration.conftest import make_settings
from trainers.jobs.retrain import RetrainSettings, retrain

pytestmark = pytest.mark.integration


def embedder() -> Any:
    from learn_core.embedding.cache import CachedEmbedder, EmbeddingCache
    from learn_core.embedding.hf import HFEmbedder
    from learn_core.settings import cache_dir

    return CachedEmbedder(HFEmbedder(), EmbeddingCache(100_000, cache_dir() / "ceg-cache.sqlite"))


def kafka(bootstrap: str, topic_factory: Any) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        items_topic=topic_factory("items", partitions=2),
        interactions_topic=topic_factory("inter", partitions=2),
        dlq_topic=topic_factory("dlq"),
    )


def rows_by_version(handle: Any, view: str, key: str) -> dict[tuple[str, str], list[np.ndarray]]:
    out: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    df = handle.read_offline(view)
    for k, v, e in zip(df[key], df["model_version"], df["embedding"], strict=True):
        out[(k, v)].append(np.asarray(e, np.float32))
    return out


def made_by(vec: np.ndarray, candidates: list[np.ndarray]) -> bool:
    return any(np.abs(vec - c).max() <= 1e-5 for c in candidates)


def test_events_to_ranking_with_a_version_switch_under_load(
    kafka_bootstrap: str, topic_factory: Any, tmp_path: Path
) -> None:
    from feature_repo.store import open_store

    t_start = time.monotonic()
    ds = load_dataset("sample")
    first, second = 6000, 9000
    k = kafka(kafka_bootstrap, topic_factory)
    feast = make_settings("embedded", tmp_path / "feast")
    registry = ModelRegistry(tmp_path / "registry")
    settings = RetrainSettings(epochs=2, patience=1, windows_per_user=4, catchup_delay_s=0.8)

    # 1-2. Events through both consumers (no model yet: users get the bootstrap tower).
    pipe = Pipeline(kafka_bootstrap, k, feast, registry, embedder(), reload_check_s=0.3)
    pipe.start()
    handle = open_store(feast)
    try:
        with EventProducer(kafka_bootstrap, k) as producer:
            replay(ds, producer, limit=first)
        pipe.wait_for(len(ds.items), first, timeout_s=120)

        # 3. First training, backfill, promotion.
        rep1 = retrain(handle, registry, settings, force=True)
        assert rep1 is not None and rep1.promoted and rep1.version is not None
        assert rep1.backfill["items"] == len(ds.items)
        assert rep1.candidate["n"] > 0

        # 4. The reader serves one version: every row of the answer is the first model's.
        reader = RankingReader(handle, registry, RankingSettings(version_check_s=0.0))
        users = sorted(set(ds.interactions["user_id"].iloc[:first]))[:20]
        items = [it.item_id for it in ds.items]
        res = reader.rank(users[0], items[:100])
        assert res.model_version == rep1.version and res.status == [OK] * 100
        assert np.isfinite(res.cvr).all() and res.mid_emb.shape == (100, 64)
        top = reader.retrieve(users[0], 10)
        assert top.model_version == rep1.version and len(top.item_ids) == 10

        # 5. More events and a retrain + switch while readers keep querying.
        answers: list[Any] = []
        refused: list[str] = []
        stop = threading.Event()

        def query(seed: int) -> None:
            rng = np.random.default_rng(seed)
            r = RankingReader(open_store(feast), registry, RankingSettings(version_check_s=0.0))
            try:
                while not stop.is_set():
                    u = users[int(rng.integers(len(users)))]
                    cands = list(rng.choice(items, 50, replace=False))
                    try:
                        answers.append(r.rank(u, cands))
                    except UnknownUserError as exc:  # user row of the other version: refused
                        refused.append(str(exc))
            finally:
                r.handle.close()

        threads = [threading.Thread(target=query, args=(s,)) for s in range(2)]
        for t in threads:
            t.start()
        with EventProducer(kafka_bootstrap, k) as producer:
            replay(
                ds.__class__(ds.name, ds.items, ds.interactions.iloc[first:second]),
                producer,
                items=False,
            )
        pipe.wait_for(len(ds.items), second, timeout_s=120)
        rep2 = retrain(handle, registry, settings, force=True)
        assert (
            rep2 is not None
            and rep2.version not in (None, rep1.version)
            and rep2.current_version == rep1.version
        )
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=30)

        # No response mixes versions: each vector is one its response's version wrote.
        items_v = rows_by_version(handle, "item_tower_embedding", "item_id")
        users_v = rows_by_version(handle, "user_tower_embedding", "user_id")
        versions = {a.model_version for a in answers}
        assert versions == {rep1.version, rep2.version}, versions
        checked = 0
        for a in answers:
            assert made_by(a.user_embedding, users_v[(a.user_id, a.model_version)])
            for r, iid in enumerate(a.item_ids):
                if a.status[r] == OK:
                    assert made_by(a.item_embeddings[r], items_v[(iid, a.model_version)])
                    checked += 1
        assert checked > 1000
        # After the switch and catch-up, everything is served by the second model.
        final = reader.rank(users[0], items[:100])
        assert final.model_version == rep2.version and final.status == [OK] * 100
    finally:
        pipe.close()
        handle.close()
    assert time.monotonic() - t_start < 240
