"""Feast adapters of the item consumer: content embeddings, then item-tower vectors of new items.

``FeastItemSink`` writes the content rows (offline, then online). ``ItemTowerSink`` wraps
any ``ItemContentSink``: after the content rows are durable it runs the *current*
model's item tower over them (one batched forward, ``learn_core.inference``) and writes
the ``item_tower_embedding`` rows, stamped with that model's version, offline then
online. A just-created item is so retrievable seconds after its event, before the next
backfill (cold start). While a switch is under way it writes the pending version's rows
too, first (``ModelCache.writing``): an item written before the switch is never
``unknown`` after it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from feature_repo.schema import ITEM_CONTENT, ITEM_TOWER
from learn_core.contract import ContentMismatch
from learn_core.inference import item_tower_rows
from learn_core.serving import VersionError

if TYPE_CHECKING:
    from feature_repo.online import EmbeddingRows
    from feature_repo.settings import FeastSettings
    from feature_repo.store import FeatureStoreHandle
    from learn_core.serving import ModelCache

log = logging.getLogger(__name__)


class ItemContentSink(Protocol):
    """Where content embeddings go (Feast online + offline in production)."""

    def write_item_content(self, rows: pd.DataFrame) -> None: ...


class FeastItemSink:
    """Writes a micro-batch to the offline log first, then the online store.

    Offline first: if the online write then fails, the batch is retried and the
    offline append is idempotent by (item_id, event_timestamp), so neither store
    loses or duplicates a row.
    """

    def __init__(self, handle: FeatureStoreHandle) -> None:
        self.handle = handle

    def write_item_content(self, rows: pd.DataFrame) -> None:
        self.handle.append_offline(ITEM_CONTENT.name, rows)
        self.handle.write_online(ITEM_CONTENT.name, rows)

    def read_item_content(self, ids: list[str]) -> dict[str, tuple]:
        """``{item_id: (vector, model_version, event_timestamp)}`` for the ids found."""
        got: EmbeddingRows = self.handle.read_embeddings(ITEM_CONTENT.name, ids)
        return {
            i: (got.vectors[r], got.model_version[r], got.event_timestamp[r])
            for r, i in enumerate(got.ids)
            if got.found[r]
        }

    def close(self) -> None:
        self.handle.close()


class ItemTowerSink:
    """``ItemContentSink`` for the item consumer: content first, then the tower vectors.

    With no promoted model yet it writes content only (the first backfill covers the
    items); so it does, logging why, when the current model was trained on another
    content model (refused by the cache): content keeps flowing, and no item-tower vector
    is made from vectors the model cannot read. A write failure raises, so the consumer
    retries the batch; both writes are idempotent by (item_id, event_timestamp) offline
    and upserts online.
    """

    def __init__(
        self, inner: ItemContentSink, handle: FeatureStoreHandle, models: ModelCache
    ) -> None:
        self.inner = inner
        self.handle = handle
        self.models = models
        self.written = 0
        self.refused: set[str] = set()

    def write_item_content(self, rows: pd.DataFrame) -> None:
        self.inner.write_item_content(rows)
        if rows.empty:
            return
        try:
            # Asked after the content rows are durable: a backfill's catch-up that misses
            # them reads the log after this check, when the pending version is known.
            models = self.models.writing()
        except VersionError:
            log.debug(
                "no promoted model: %d items get tower vectors at the first backfill", len(rows)
            )
            return
        except ContentMismatch as exc:
            if str(exc) not in self.refused:  # once per refusal, not once per batch
                self.refused.add(str(exc))
                log.error("item-tower vectors not written: %s", exc)
            return
        content = np.stack([np.asarray(v, np.float32) for v in rows["embedding"]])
        for model in models:  # each its own stamp: the offline log's key is (item, time)
            tower = item_tower_rows(model, list(rows["item_id"]), content, datetime.now(UTC))
            self.handle.append_offline(ITEM_TOWER.name, tower)
            self.handle.write_online(ITEM_TOWER.name, tower)
        self.written += len(rows)

    def read_item_content(self, ids: list[str]) -> dict[str, tuple]:
        return self.inner.read_item_content(ids)  # type: ignore[attr-defined]

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def open_sink(settings: FeastSettings | None = None) -> FeastItemSink:
    """Open the Feast store of the configured profile (applying definitions if needed)."""
    from feature_repo.store import open_store

    return FeastItemSink(open_store(settings))
