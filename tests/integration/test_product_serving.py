"""The benchmark measures what is served: the product model, trained by the benchmark's own
function, saved, backfilled into Feast and retrieved through the ranking reader, gets the
benchmark's HR@10 on the same data, from the store's vectors (both profiles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_repo.schema import INTERACTION_LOG, ITEM_CONTENT
from feature_repo.store import FeatureStoreHandle

pytestmark = pytest.mark.integration

T = pd.Timestamp("2024-03-01", tz="UTC")


def test_ranking_reader_serves_the_benchmarks_hr_at_10(
    feast_handle: FeatureStoreHandle, tmp_path: Path
) -> None:
    from bench.quality_config import product_fit
    from learn_core.datasets import load_dataset
    from learn_core.embedding.hf import HFEmbedder
    from learn_core.embedding.identity import content_identity
    from learn_core.registry import ModelRegistry
    from learn_core.serving import as_serving
    from ranking.reader import RankingReader
    from ranking.settings import RankingSettings
    from trainers.content_cache import content_matrix
    from trainers.evaluation import eval_loop
    from trainers.jobs.backfill import backfill
    from trainers.metrics import ranking_metrics
    from trainers.recipe import PRODUCT_RECIPE
    from trainers.splits import leave_one_out
    from trainers.train import save_version, serving_contract

    h = feast_handle
    ds = load_dataset("sample", None)
    split = leave_one_out(ds, cold_fraction=0.1, seed=0)
    embedder = HFEmbedder()
    content = content_matrix(ds.items, embedder)
    fitted = product_fit(split, content, ds.name, seed=0, time_budget_s=None, quick=True)
    bench_score = fitted.score_fn()
    ranks = eval_loop(bench_score, split, "test")
    want = ranking_metrics(ranks[~np.isnan(ranks)])["hr@10"]

    identity = content_identity(embedder)
    reg = ModelRegistry(tmp_path / "registry")
    contract = serving_contract(fitted.model, fitted.history_len, PRODUCT_RECIPE.pairing, identity)
    version = save_version(
        reg,
        fitted.model,
        contract,
        data_window={},
        metrics={},
        parent_version=None,
        recipe=PRODUCT_RECIPE,
    )
    reg.promote(version)

    # The logs the system keeps: every item's content, each test user's history in order.
    h.append_offline(
        ITEM_CONTENT.name,
        pd.DataFrame(
            {
                "item_id": split.item_ids,
                "embedding": list(content),
                "model_version": identity,
                "event_timestamp": T,
            }
        ),
    )
    users = [u for u in range(len(split.users)) if split.test[u] >= 0]
    events = [
        {
            "event_id": f"e{u}-{n}",
            "user_id": split.users[u],
            "item_id": split.item_ids[i],
            "event_type": "click",
            "value": np.nan,
            "event_timestamp": T + pd.Timedelta(minutes=1 + n),
        }
        for u in users
        for n, i in enumerate(split.history(u, "test"))
    ]
    h.append_offline(INTERACTION_LOG.name, pd.DataFrame(events))
    done = backfill(h, as_serving(version, reg.load(version)), history_len=contract.history_len)
    assert done.items == split.n_items and done.users == len(users)

    reader = RankingReader(h, reg, RankingSettings(version_check_s=0.0))
    try:
        hits, checked = 0, 0
        for u in users:
            target = split.test[u]
            seen = [split.item_ids[i] for i in split.excluded(u, "test") if i != target]
            top = reader.retrieve(split.users[u], 10, exclude=seen)
            assert top.model_version == version
            hits += split.item_ids[target] in top.item_ids
            if checked < 20:  # the served scores are the benchmark's, item for item
                index = {i: n for n, i in enumerate(split.item_ids)}
                mine = bench_score(np.array([u]), [split.history(u, "test")])[0]
                np.testing.assert_allclose(
                    top.scores, mine[[index[i] for i in top.item_ids]], atol=1e-5, rtol=0
                )
                checked += 1
    finally:
        reader.close()
    served = hits / len(users)
    assert abs(served - want) <= 1e-6, (served, want)
    # the small data still has cold targets, scored from content alone
    assert (split.cold[split.test[users]]).any()
