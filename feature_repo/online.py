"""Online writes and low-latency embedding reads.

Writes go through ``FeatureStore.write_to_online_store`` (Feast serialises the entity
keys and values the same way for every backend). Reads of embeddings by id skip
``get_online_features``, which re-resolves the feature references, builds a response
protobuf and converts it back to Python for every call; ``read_embeddings`` calls the
provider's ``online_read`` (Feast's per-backend ``OnlineStore.online_read``: SQLite or
Redis) and decodes straight into a float32 matrix. ``read_embeddings_reference`` is the
stock path, kept so the fast path can be tested for equality against it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from feature_repo.schema import CREATED_TS, EVENT_TS, VIEWS

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

logger = logging.getLogger(__name__)


@dataclass
class EmbeddingRows:
    """Embeddings for ``ids`` in order; rows not found are zero with ``found`` False."""

    ids: list[str]
    vectors: np.ndarray
    model_version: list[str | None]
    found: np.ndarray
    event_timestamp: list[datetime | None]
    extra: dict[str, list[Any]]


class OnlineEmbeddings:
    """Writer and fast reader for the embedding views of one ``FeatureStore``."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._views: dict[str, FeatureView] = {}

    def _view(self, name: str) -> FeatureView:
        if name not in VIEWS:
            raise KeyError(f"unknown view {name!r}; known: {sorted(VIEWS)}")
        if name not in self._views:
            self._views[name] = self.store.get_feature_view(name)
        return self._views[name]

    def write_online(self, view: str, df: pd.DataFrame) -> int:
        """Upsert the latest row per entity into the online store; return rows written.

        ``df`` has the join key, the view's features (``embedding`` as rows of floats,
        ``model_version``, ...) and ``event_timestamp``; ``created`` is optional.
        """
        spec = VIEWS[view]
        missing = [c for c in spec.column_names if c not in df.columns and c != CREATED_TS]
        if missing:
            raise ValueError(f"{view}: missing columns {missing}")
        if df.empty:
            return 0
        df = df.copy(deep=False)
        df[EVENT_TS] = pd.to_datetime(df[EVENT_TS], utc=True)
        if CREATED_TS not in df.columns:
            # Feast reads the view's created column even for online writes.
            df[CREATED_TS] = pd.Timestamp(datetime.now(UTC))
        # Feast's value conversion wants Python lists for list features.
        df["embedding"] = [np.asarray(v, dtype=np.float32).tolist() for v in df["embedding"]]
        self.store.write_to_online_store(feature_view_name=view, df=df)
        return len(df)

    def read_embeddings(
        self, view: str, ids: list[str], *, model_version: str | None = None
    ) -> EmbeddingRows:
        """Embeddings of ``ids`` from the online store, straight from ``online_read``.

        With ``model_version`` set, rows made by another version count as not found, so
        a caller never mixes vectors from two models.
        """
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        fv = self._view(view)
        spec = VIEWS[view]
        assert spec.join_key is not None
        features = spec.feature_names
        keys = [
            EntityKey(join_keys=[spec.join_key], entity_values=[Value(string_val=i)]) for i in ids
        ]
        provider = self.store._get_provider()
        rows = provider.online_read(self.store.config, fv, keys, features)
        return _decode(ids, rows, features, model_version)

    def read_embeddings_reference(self, view: str, ids: list[str]) -> EmbeddingRows:
        """The same read through stock ``get_online_features`` (slower; for tests)."""
        spec = VIEWS[view]
        assert spec.join_key is not None
        refs = [f"{view}:{f}" for f in spec.feature_names]
        out = self.store.get_online_features(
            features=refs, entity_rows=[{spec.join_key: i} for i in ids]
        ).to_dict()
        vecs = out["embedding"]
        dim = max((len(v) for v in vecs if v is not None), default=0)
        vectors = np.zeros((len(ids), dim), np.float32)
        found = np.array([v is not None for v in vecs], dtype=bool)
        for r, v in enumerate(vecs):
            if v is not None:
                vectors[r] = v
        extra = {f: out[f] for f in spec.feature_names if f not in ("embedding", "model_version")}
        return EmbeddingRows(ids, vectors, out["model_version"], found, [None] * len(ids), extra)


def _decode(
    ids: list[str],
    rows: list[tuple[datetime | None, dict[str, Any] | None]],
    features: list[str],
    want_version: str | None,
) -> EmbeddingRows:
    vecs: list[np.ndarray | None] = []
    versions: list[str | None] = []
    stamps: list[datetime | None] = []
    extra: dict[str, list[Any]] = {
        f: [] for f in features if f not in ("embedding", "model_version")
    }
    for ts, values in rows:
        values = values or {}
        emb = values.get("embedding")
        vec = (
            np.asarray(emb.float_list_val.val, dtype=np.float32)
            if emb is not None and emb.HasField("float_list_val")
            else None
        )
        mv = values.get("model_version")
        version = mv.string_val if mv is not None and mv.HasField("string_val") else None
        if want_version is not None and version != want_version:
            vec = None
        vecs.append(vec)
        versions.append(version)
        stamps.append(ts)
        for f in extra:
            v = values.get(f)
            extra[f].append(
                None
                if v is None or v.WhichOneof("val") is None
                else getattr(v, v.WhichOneof("val"))
            )
    dim = max((len(v) for v in vecs if v is not None), default=0)
    vectors = np.zeros((len(ids), dim), np.float32)
    found = np.zeros(len(ids), dtype=bool)
    for r, v in enumerate(vecs):
        if v is not None and len(v) == dim:
            vectors[r] = v
            found[r] = True
    return EmbeddingRows(ids, vectors, versions, found, stamps, extra)
