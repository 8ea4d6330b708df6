"""Cold start end to end: a new item's event -> in a matching user's top-K within 2 s.

No retraining: the item consumer's sink runs the promoted model's item tower over the
new item's content embedding, and the reader's exact index picks the row up on its
next refresh. The user's history is one item, X; the new item carries X's text under a
new id, so a model that ranks by content must put it near the top (X itself excluded).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from learn_core.datasets import load_dataset
from learn_core.events import Interaction, to_json_bytes
from learn_core.registry import ModelRegistry
from learnrec.pipeline import Pipeline
from ranking.reader import RankingReader
from ranking.settings import RankingSettings
from streaming.producer import EventProducer
from streaming.replay import replay
from tests.integration.conftest import make_settings
from tests.integration.test_e2e import embedder, kafka
from trainers.jobs.retrain import RetrainSettings, retrain

pytestmark = pytest.mark.integration

K = 10


def test_new_item_is_retrievable_within_two_seconds(
    kafka_bootstrap: str, topic_factory: Any, tmp_path: Path
) -> None:
    from feature_repo.store import open_store

    ds = load_dataset("sample")
    n = 4000
    k = kafka(kafka_bootstrap, topic_factory)
    feast = make_settings("embedded", tmp_path / "feast")
    registry = ModelRegistry(tmp_path / "registry")
    pipe = Pipeline(kafka_bootstrap, k, feast, registry, embedder(), reload_check_s=0.2)
    pipe.start()
    handle = open_store(feast)
    try:
        with EventProducer(kafka_bootstrap, k) as producer:
            replay(ds, producer, limit=n)
        pipe.wait_for(len(ds.items), n, timeout_s=120)
        rep = retrain(
            handle,
            registry,
            RetrainSettings(epochs=2, patience=1, windows_per_user=4, catchup_delay_s=0.3),
            force=True,
        )
        assert rep is not None and registry.current_version() == rep.version

        # A user whose whole history is item X.
        x = ds.items[7]
        user = f"cold-{uuid.uuid4().hex[:6]}"
        with EventProducer(kafka_bootstrap, k) as producer:
            for j in range(3):
                producer.send(
                    Interaction(
                        event_id=f"{user}-{j}",
                        user_id=user,
                        item_id=x.item_id,
                        event_type="click",
                        occurred_at=datetime.now(UTC),
                    )
                )
        reader = RankingReader(
            handle, registry, RankingSettings(index_refresh_s=0.2, version_check_s=0.0)
        )
        reader.start()
        deadline = time.monotonic() + 30
        while True:
            got = handle.read_embeddings("user_tower_embedding", [user], rep.version)
            if got.model_version[0] == rep.version:
                break
            assert time.monotonic() < deadline, "the user's embedding never appeared"
            time.sleep(0.1)
        new_id = f"new-{uuid.uuid4().hex[:8]}"
        assert new_id not in reader.retrieve(user, K, exclude=[x.item_id]).item_ids

        # The new item: X's text under a new id, created now.
        new = x.model_copy(update={"item_id": new_id, "created_at": datetime.now(UTC)})
        with EventProducer(kafka_bootstrap, k) as producer:
            t0 = time.monotonic()
            producer.send_raw(k.items_topic, new_id.encode(), to_json_bytes(new))
            producer.flush()
        while True:
            top = reader.retrieve(user, K, exclude=[x.item_id])
            if new_id in top.item_ids:
                elapsed = time.monotonic() - t0
                break
            assert time.monotonic() - t0 < 10, f"{new_id} not in the top-{K}: {top.item_ids}"
            time.sleep(0.05)
        assert top.model_version == rep.version and registry.current_version() == rep.version
        assert elapsed <= 2.0, f"new item took {elapsed:.2f}s to reach the top-{K}"
        reader.close()
    finally:
        pipe.close()
        handle.close()
