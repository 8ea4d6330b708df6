"""Online writes and low-latency embedding reads.

Writes go through ``FeatureStore.write_to_online_store`` (Feast serialises the entity
keys and values the same way for every backend). Two read paths skip
``get_online_features``, which re-resolves the feature references, builds a response
protobuf and converts it back to Python for every call:

* ``read_embeddings`` calls the provider's ``online_read`` (Feast's per-backend
  ``OnlineStore.online_read``) and decodes into a float32 matrix, with timestamps and
  extra features. ``read_embeddings_reference`` is the stock path it is tested against.
* ``read_vectors`` is the ranking reader's hot path: only ``embedding`` and
  ``model_version`` of several views in one round trip, read from the backend in
  Feast's own layout (``RawVectorSource``: one ``IN (...)`` query per view on SQLite,
  one pipeline of ``HMGET`` on Redis), with the version compared on the serialised
  bytes and the float lists decoded by numpy straight from the protobuf bytes
  (``decode_vectors``). It is tested for equality against ``read_embeddings``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from feature_repo.online.base import VECTOR_FIELDS, RawVectorSource, entity_key_encoder
from feature_repo.online.decode import (
    EmbeddingRows,
    VersionedVectors,
    decode_rows,
    decode_vectors,
)
from feature_repo.online.generic import FeastRawSource
from feature_repo.online.redis import RedisRawSource
from feature_repo.online.sqlite import SqliteRawSource
from feature_repo.online.versions import VERSIONED_VIEWS, online_id, online_ids, purge_version
from feature_repo.online.write import proto_rows
from feature_repo.schema import CREATED_TS, EVENT_TS, VIEWS, utc_times

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

logger = logging.getLogger(__name__)


class OnlineEmbeddings:
    """Writer and fast reader for the embedding views of one ``FeatureStore``."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._views: dict[str, FeatureView] = {}
        self._raw: RawVectorSource | None = None

    def _view(self, name: str) -> FeatureView:
        if name not in VIEWS:
            raise KeyError(f"unknown view {name!r}; known: {sorted(VIEWS)}")
        if name not in self._views:
            self._views[name] = self.store.get_feature_view(name)
        return self._views[name]

    def write_online(self, view: str, df: pd.DataFrame) -> int:
        """Upsert the latest row per entity into the online store; return rows written.

        ``df`` has the join key, the view's features (``embedding`` as rows of floats,
        ``model_version``, ...) and ``event_timestamp``; ``created`` is optional. Rows of
        the model-made views go under ``"<model_version>/<id>"`` (``versions``): beside
        the rows of other versions, never over them.
        """
        spec = VIEWS[view]
        missing = [c for c in spec.column_names if c not in df.columns and c != CREATED_TS]
        if missing:
            raise ValueError(f"{view}: missing columns {missing}")
        if df.empty:
            return 0
        df = df.copy(deep=False)
        df[EVENT_TS] = utc_times(df[EVENT_TS])
        if CREATED_TS not in df.columns:
            # Feast reads the view's created column even for online writes.
            df[CREATED_TS] = pd.Timestamp(datetime.now(UTC))
        if view in VERSIONED_VIEWS:
            key = str(spec.join_key)
            df[key] = [
                online_id(str(v), str(i)) for v, i in zip(df["model_version"], df[key], strict=True)
            ]
        fv = self._view(view)
        rows = proto_rows(fv, df)
        if rows is not None:  # the store's own writer, without the DataFrame conversion
            self.store._get_provider().online_write_batch(self.store.config, fv, rows, None)
            return len(df)
        # Feast's value conversion wants Python lists for list features.
        df["embedding"] = [np.asarray(v, dtype=np.float32).tolist() for v in df["embedding"]]
        self.store.write_to_online_store(feature_view_name=view, df=df)
        return len(df)

    def read_embeddings(
        self, view: str, ids: list[str], *, model_version: str | None = None
    ) -> EmbeddingRows:
        """Embeddings of ``ids`` from the online store, straight from ``online_read``.

        With ``model_version`` set, rows made by another version count as not found, so
        a caller never mixes vectors from two models. The model-made views keep a row per
        version (``versions``): there ``model_version`` is required and picks the rows.
        """
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        fv = self._view(view)
        spec = VIEWS[view]
        assert spec.join_key is not None
        features = spec.feature_names
        keys = [
            EntityKey(join_keys=[spec.join_key], entity_values=[Value(string_val=i)])
            for i in online_ids(view, model_version, ids)
        ]
        provider = self.store._get_provider()
        rows = provider.online_read(self.store.config, fv, keys, features)
        return decode_rows(ids, rows, features, model_version)

    def read_vectors(
        self, requests: Sequence[tuple[str, Sequence[str]]], model_version: str
    ) -> list[VersionedVectors]:
        """For each ``(view, ids)``: the ``model_version`` vectors of ``ids``, one round trip.

        The hot path of the ranking reader (user + candidates in one call); equal to
        ``read_embeddings(view, ids, model_version=...)`` for vectors and found rows.
        """
        for view, _ in requests:
            self._view(view)
        raw = self.raw_source().fetch(
            [(view, online_ids(view, model_version, ids)) for view, ids in requests]
        )
        return [decode_vectors(rows, model_version) for rows in raw]

    def raw_source(self) -> RawVectorSource:
        """The backend's raw reader (built once; SQLite, Redis, or Feast's ``online_read``)."""
        if self._raw is None:
            self._raw = make_raw_source(self.store, {v: self._view(v) for v in VIEWS})
        return self._raw

    def purge_version(self, view: str, version: str, ids: list[str]) -> int:
        """Delete ``version``'s online rows of ``ids`` (a version that no longer serves)."""
        return purge_version(self.store, self._view(view), version, ids)

    def read_embeddings_reference(
        self, view: str, ids: list[str], model_version: str | None = None
    ) -> EmbeddingRows:
        """The same read through stock ``get_online_features`` (slower; for tests)."""
        spec = VIEWS[view]
        assert spec.join_key is not None
        refs = [f"{view}:{f}" for f in spec.feature_names]
        keys = online_ids(view, model_version, ids)
        out = self.store.get_online_features(
            features=refs, entity_rows=[{spec.join_key: i} for i in keys]
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


def make_raw_source(store: FeatureStore, views: dict[str, FeatureView]) -> RawVectorSource:
    """The fastest raw reader for the store's online backend."""
    from feast.infra.online_stores.helpers import _mmh3, compute_table_id, compute_versioned_name
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisType
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    config = store.config
    online = store._get_provider().online_store
    versioning = bool(config.registry.enable_online_feature_view_versioning)
    keys = {
        name: entity_key_encoder(str(VIEWS[name].join_key), config.entity_key_serialization_version)
        for name in views
    }
    if isinstance(online, SqliteOnlineStore):
        tables = {n: compute_table_id(config.project, fv, versioning) for n, fv in views.items()}
        logger.info("fast vector reads: SQLite %s", SqliteOnlineStore._get_db_path(config))
        return SqliteRawSource(SqliteOnlineStore._get_db_path(config), tables, keys)
    if isinstance(online, RedisOnlineStore):
        fields = {}
        for n, fv in views.items():
            name = compute_versioned_name(fv, versioning)
            fields[n] = [_mmh3(f"{name}:{f}") for f in VECTOR_FIELDS]
        single = config.online_store.redis_type != RedisType.redis_cluster
        logger.info("fast vector reads: Redis %s", "script" if single else "pipeline")
        client = online._get_client(config.online_store)
        return RedisRawSource(client, config.project, fields, keys, use_script=single)
    logger.info("fast vector reads: %s via online_read", type(online).__name__)
    return FeastRawSource(store, views)
