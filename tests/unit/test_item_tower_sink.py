"""The item consumer's item-tower writes: from the current model, never across content models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from learn_core.contract import ServingConfig
from learn_core.inference import encode_items
from learn_core.models.learn import LearnConfig, LearnModel
from learn_core.models.towers import TowerConfig
from learn_core.registry import ModelRegistry
from learn_core.serving import ModelCache, as_serving
from streaming.sinks import ItemTowerSink


class FakeHandle:
    """Records writes by view (the Feast handle's two write calls)."""

    def __init__(self) -> None:
        self.offline: dict[str, list[pd.DataFrame]] = {}
        self.online: dict[str, list[pd.DataFrame]] = {}

    def append_offline(self, view: str, rows: pd.DataFrame) -> None:
        self.offline.setdefault(view, []).append(rows)

    def write_online(self, view: str, rows: pd.DataFrame) -> None:
        self.online.setdefault(view, []).append(rows)


class Content:
    def __init__(self) -> None:
        self.rows: list[pd.DataFrame] = []

    def write_item_content(self, rows: pd.DataFrame) -> None:
        self.rows.append(rows)


def rows(n: int) -> pd.DataFrame:
    v = np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32)
    return pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(n)],
            "embedding": list(v),
            "model_version": "ident-A",
            "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
        }
    )


def test_tower_vectors_from_the_current_model_and_refused_across_content_models(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    model = LearnModel(LearnConfig(TowerConfig(content_dim=16, d_model=16, max_len=8)))
    reg = ModelRegistry(tmp_path)
    v = reg.save(model, content_model="ident-A", serving=ServingConfig(6, "window", "ident-A"))
    reg.promote(v)
    batch = rows(5)

    handle, content = FakeHandle(), Content()
    sink = ItemTowerSink(content, handle, ModelCache(reg, expect_content="ident-A"))  # type: ignore[arg-type]
    sink.write_item_content(batch)
    assert len(content.rows) == 1 and sink.written == 5
    (written,) = handle.online["item_tower_embedding"]
    assert set(written["model_version"]) == {v}
    want = encode_items(as_serving(v, reg.load(v)), np.stack(batch["embedding"]))
    np.testing.assert_allclose(np.stack(written["embedding"]), want, atol=1e-6)

    # The running content model is B: content still flows, no tower vector is made.
    handle, content = FakeHandle(), Content()
    sink = ItemTowerSink(content, handle, ModelCache(reg, expect_content="ident-B"))  # type: ignore[arg-type]
    sink.write_item_content(batch)
    sink.write_item_content(batch)
    assert len(content.rows) == 2 and sink.written == 0 and not handle.online
    assert len(sink.refused) == 1 and "'ident-A'" in next(iter(sink.refused))
