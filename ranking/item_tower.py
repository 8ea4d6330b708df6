"""Item-tower vectors for new items, written as their content arrives (cold start).

A just-created item has a content embedding seconds after its event (the item
consumer) but no item-tower vector until the next backfill. ``ItemTowerSink`` wraps
the item consumer's sink: after the content rows are durable it runs the *current*
model's item tower over them (one batched forward, no retraining) and writes the
``item_tower_embedding`` rows, stamped with that model's version, offline then online.
The retrieval index picks them up on its next refresh.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from ranking.core import VersionError

if TYPE_CHECKING:
    from feature_repo.store import FeatureStoreHandle
    from ranking.models import ModelCache, ServingModel

log = logging.getLogger(__name__)

ITEM_TOWER_VIEW = "item_tower_embedding"
ITEM_CONTENT_VIEW = "item_content_embedding"
USER_TOWER_VIEW = "user_tower_embedding"


def encode_items(model: ServingModel, content: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """``[n, content_dim]`` content vectors -> ``[n, out_dim]`` float32 item-tower vectors."""
    import torch

    if content.shape[1] != model.content_dim:
        raise ValueError(f"content dim {content.shape[1]} != model's {model.content_dim}")
    with torch.inference_mode():
        out = model.item_tower.encode_items(
            torch.from_numpy(np.ascontiguousarray(content, dtype=np.float32)), batch_size
        )
    return out.numpy().astype(np.float32, copy=False)


def item_tower_rows(
    model: ServingModel, item_ids: list[str], content: np.ndarray, when: datetime
) -> pd.DataFrame:
    """Rows of the ``item_tower_embedding`` view for ``item_ids`` (pure but for torch)."""
    vecs = encode_items(model, content)
    return pd.DataFrame(
        {
            "item_id": item_ids,
            "embedding": list(vecs),
            "model_version": model.version,
            "event_timestamp": pd.Timestamp(when).tz_convert("UTC")
            if pd.Timestamp(when).tzinfo
            else pd.Timestamp(when, tz="UTC"),
            "created": pd.Timestamp(datetime.now(UTC)),
        }
    )


class ContentSink(Protocol):
    def write_item_content(self, rows: pd.DataFrame) -> None: ...


class ItemTowerSink:
    """``ItemContentSink`` for the item consumer: content first, then the tower vectors.

    With no promoted model yet it writes content only (the first backfill covers the
    items). A failure raises, so the consumer retries the batch; both writes are
    idempotent by (item_id, event_timestamp) offline and upserts online.
    """

    def __init__(self, inner: ContentSink, handle: FeatureStoreHandle, models: ModelCache) -> None:
        self.inner = inner
        self.handle = handle
        self.models = models
        self.written = 0

    def write_item_content(self, rows: pd.DataFrame) -> None:
        self.inner.write_item_content(rows)
        if rows.empty:
            return
        try:
            model = self.models.current()
        except VersionError:
            log.debug(
                "no promoted model: %d items get tower vectors at the first backfill", len(rows)
            )
            return
        content = np.stack([np.asarray(v, np.float32) for v in rows["embedding"]])
        tower = item_tower_rows(model, list(rows["item_id"]), content, datetime.now(UTC))
        self.handle.append_offline(ITEM_TOWER_VIEW, tower)
        self.handle.write_online(ITEM_TOWER_VIEW, tower)
        self.written += len(tower)

    def read_item_content(self, ids: list[str]) -> dict[str, tuple]:
        return self.inner.read_item_content(ids)  # type: ignore[attr-defined]

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
