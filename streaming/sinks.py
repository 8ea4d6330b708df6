"""Feast adapter for the item consumer: content embeddings to the online and offline stores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from streaming.item_consumer import ITEM_CONTENT_VIEW

if TYPE_CHECKING:
    from feature_repo.online import EmbeddingRows
    from feature_repo.settings import FeastSettings
    from feature_repo.store import FeatureStoreHandle


class FeastItemSink:
    """Writes a micro-batch to the offline log first, then the online store.

    Offline first: if the online write then fails, the batch is retried and the
    offline append is idempotent by (item_id, event_timestamp), so neither store
    loses or duplicates a row.
    """

    def __init__(self, handle: FeatureStoreHandle) -> None:
        self.handle = handle

    def write_item_content(self, rows: pd.DataFrame) -> None:
        self.handle.append_offline(ITEM_CONTENT_VIEW, rows)
        self.handle.write_online(ITEM_CONTENT_VIEW, rows)

    def read_item_content(self, ids: list[str]) -> dict[str, tuple]:
        """``{item_id: (vector, model_version, event_timestamp)}`` for the ids found."""
        got: EmbeddingRows = self.handle.read_embeddings(ITEM_CONTENT_VIEW, ids)
        return {
            i: (got.vectors[r], got.model_version[r], got.event_timestamp[r])
            for r, i in enumerate(got.ids)
            if got.found[r]
        }

    def close(self) -> None:
        self.handle.close()


def open_sink(settings: FeastSettings | None = None) -> FeastItemSink:
    """Open the Feast store of the configured profile (applying definitions if needed)."""
    from feature_repo.store import open_store

    return FeastItemSink(open_store(settings))
