"""A retrained model carries its serving contract, and is refused beside another content model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_repo.schema import INTERACTION_LOG, ITEM_CONTENT
from feature_repo.store import FeatureStoreHandle
from learn_core.contract import ContentMismatch
from learn_core.registry import ModelRegistry
from learn_core.serving import ModelCache, as_serving
from trainers.jobs.backfill import backfill
from trainers.jobs.retrain import RetrainSettings, retrain
from trainers.recipe import PRODUCT_RECIPE
from trainers.train import recipe_record

pytestmark = pytest.mark.integration

T = pd.Timestamp("2024-03-01", tz="UTC")
OURS = "tiny-encoder@0123456789abcdef"
OTHER = "tiny-encoder@fedcba9876543210"  # same name and width, other weights


def content_rows(items: list[str], version: str, ts: pd.Timestamp, seed: int) -> pd.DataFrame:
    v = np.random.default_rng(seed).standard_normal((len(items), 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return pd.DataFrame(
        {"item_id": items, "embedding": list(v), "model_version": version, "event_timestamp": ts}
    )


@pytest.mark.parametrize("feast_profile", ["embedded"])
def test_retrained_manifest_holds_the_contract_and_refuses_another_content_model(
    feast_handle: FeatureStoreHandle, tmp_path: Path
) -> None:
    h = feast_handle
    items = [f"i{n}" for n in range(30)]
    h.append_offline(ITEM_CONTENT.name, content_rows(items, OURS, T, seed=0))
    rng = np.random.default_rng(1)
    rows = [
        {
            "event_id": f"e{u}-{n}",
            "user_id": f"u{u}",
            "item_id": items[int(rng.integers(len(items)))],
            "event_type": "click",
            "value": np.nan,
            "event_timestamp": T + pd.Timedelta(hours=1 + u + 30 * n),
        }
        for u in range(20)
        for n in range(8)
    ]
    h.append_offline(INTERACTION_LOG.name, pd.DataFrame(rows))

    reg = ModelRegistry(tmp_path / "registry")
    s = RetrainSettings(
        epochs=1, cvr_epochs=1, history_len=6, min_interactions=10, catchup_delay_s=0
    )
    report = retrain(h, reg, s)
    assert report is not None and report.promoted and report.version is not None
    manifest = reg.manifest(report.version)
    # The product's named recipe, recorded with its settings (no overrides set here).
    serving = dict(manifest["serving"])
    rows, digest = serving.pop("id_table_rows"), serving.pop("id_table_sha256")
    assert serving == {"history_len": 6, "pairing": PRODUCT_RECIPE.pairing, "content_model": OURS}
    # An ID table (one row per trained item, named by its vocabulary's digest) exactly
    # when the product's recipe learns one.
    learns_ids = getattr(PRODUCT_RECIPE, "use_ids", False) is True
    assert (rows > 0) == learns_ids and (digest is not None) == learns_ids
    assert rows <= len(items)
    assert manifest["extra"]["recipe"] == recipe_record(PRODUCT_RECIPE)
    assert manifest["content_model"] == OURS
    assert reg.load(report.version).serving.history_len == 6  # type: ignore[union-attr]

    # Beside a running content model of another identity: refused, naming both.
    with pytest.raises(ContentMismatch, match=f"'{OURS}'.*'{OTHER}'"):
        reg.load(report.version, expect_content=OTHER)
    with pytest.raises(ContentMismatch, match=f"'{OURS}'.*'{OTHER}'"):
        ModelCache(reg, expect_content=OTHER).current()

    # Beside store vectors of another identity: the backfill refuses, naming both.
    model = as_serving(report.version, reg.load(report.version))
    h.append_offline(
        ITEM_CONTENT.name, content_rows(items[:3], OTHER, T + pd.Timedelta(days=30), seed=2)
    )
    with pytest.raises(ContentMismatch, match=f"'{OURS}'.*3 of 30 items.*{OTHER}"):
        backfill(h, model, history_len=6)
