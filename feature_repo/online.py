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
import sqlite3
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from feature_repo.schema import CREATED_TS, EVENT_TS, VIEWS

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

logger = logging.getLogger(__name__)

#: The two features the ranking reader needs from an embedding view.
VECTOR_FIELDS = ("embedding", "model_version")
#: Serialised ``ValueProto`` bytes of (``embedding``, ``model_version``) for one id;
#: ``None`` where the store holds no such field.
RawPair = tuple[bytes | None, bytes | None]


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

    def read_vectors(
        self, requests: Sequence[tuple[str, Sequence[str]]], model_version: str
    ) -> list[VersionedVectors]:
        """For each ``(view, ids)``: the ``model_version`` vectors of ``ids``, one round trip.

        The hot path of the ranking reader (user + candidates in one call); equal to
        ``read_embeddings(view, ids, model_version=...)`` for vectors and found rows.
        """
        for view, _ in requests:
            self._view(view)
        raw = self.raw_source().fetch(requests)
        return [decode_vectors(rows, model_version) for rows in raw]

    def raw_source(self) -> RawVectorSource:
        """The backend's raw reader (built once; SQLite, Redis, or Feast's ``online_read``)."""
        if self._raw is None:
            self._raw = make_raw_source(self.store, {v: self._view(v) for v in VIEWS})
        return self._raw

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


# ---------------------------------------------------------------- fast vector reads


@dataclass
class VersionedVectors:
    """Vectors of one model version for a request's ids, in request order.

    ``ok[r]``: the store holds a row of ``want_version`` for id ``r`` whose vector has
    the common width; other rows of ``vectors`` are zero. ``version(r)`` says which
    version the store holds for a row (``None``: none), decoded only when asked.
    """

    vectors: np.ndarray
    ok: np.ndarray
    raw_versions: list[bytes | None]
    want_version: str

    def version(self, r: int) -> str | None:
        return _string_of(self.raw_versions[r])


def decode_vectors(raw: Sequence[RawPair], want_version: str) -> VersionedVectors:
    """Raw ``(embedding, model_version)`` value bytes -> float32 rows of ``want_version``.

    Same rule as ``read_embeddings(..., model_version=want_version)``: a row counts when
    its version equals ``want_version`` and its float list has the widest width among
    such rows. Rows sharing one byte length and the canonical protobuf header are
    decoded in one ``np.frombuffer``; anything else falls back to ``ParseFromString``.
    """
    want = _string_value_bytes(want_version)
    versions = [v for _, v in raw]
    rows = [
        r
        for r, (emb, ver) in enumerate(raw)
        if emb is not None and ver is not None and (ver == want or _string_of(ver) == want_version)
    ]
    by_len: dict[int, list[int]] = {}
    for r in rows:
        by_len.setdefault(len(raw[r][0] or b""), []).append(r)
    blocks: list[tuple[list[int], np.ndarray]] = []
    for group in by_len.values():
        values = [raw[r][0] or b"" for r in group]
        block = _float_block(values)
        if block is not None:
            blocks.append((group, block))
            continue
        for r, value in zip(group, values, strict=True):
            vec = _floats_of(value)
            if vec is not None:
                blocks.append(([r], vec[None, :]))
    dim = max((b.shape[1] for _, b in blocks), default=0)
    vectors = np.zeros((len(raw), dim), np.float32)
    ok = np.zeros(len(raw), dtype=bool)
    for group, block in blocks:
        if block.shape[1] == dim:
            vectors[group] = block
            ok[group] = True
    return VersionedVectors(vectors, ok, versions, want_version)


@lru_cache(maxsize=64)
def _string_value_bytes(s: str) -> bytes:
    from feast.protos.feast.types.Value_pb2 import Value

    return Value(string_val=s).SerializeToString()


@lru_cache(maxsize=16)
def _float_list_header(dim: int) -> bytes:
    """The bytes before the packed floats in a serialised ``Value(float_list_val=[dim])``."""
    from feast.protos.feast.types.Value_pb2 import FloatList, Value

    return Value(float_list_val=FloatList(val=[0.0] * dim)).SerializeToString()[: -4 * dim]


def _string_of(raw: bytes | None) -> str | None:
    from feast.protos.feast.types.Value_pb2 import Value

    if raw is None:
        return None
    v = Value()
    v.ParseFromString(raw)
    return v.string_val if v.HasField("string_val") else None


def _floats_of(raw: bytes) -> np.ndarray | None:
    from feast.protos.feast.types.Value_pb2 import Value

    v = Value()
    v.ParseFromString(raw)
    if not v.HasField("float_list_val"):
        return None
    return np.asarray(v.float_list_val.val, dtype=np.float32)


def _float_block(values: list[bytes]) -> np.ndarray | None:
    """``[m, dim]`` floats of equally long canonical float-list values; None otherwise."""
    first = _floats_of(values[0])
    if first is None or first.shape[0] == 0:
        return None
    dim = first.shape[0]
    header = _float_list_header(dim)
    width = len(values[0])
    if width != len(header) + 4 * dim or not values[0].startswith(header):
        return None
    buf = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), width)
    if len(values) > 1 and not (buf[:, : len(header)] == buf[0, : len(header)]).all():
        return None
    return np.ascontiguousarray(buf[:, len(header) :]).view("<f4").astype(np.float32)


class RawVectorSource(Protocol):
    """One online store's read of raw ``(embedding, model_version)`` bytes, Feast's layout."""

    def fetch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[RawPair]]:
        """For each ``(view, ids)``, one ``RawPair`` per id in order."""
        ...


def entity_key_encoder(join_key: str, serialization_version: int) -> Callable[[str], bytes]:
    """Feast's ``serialize_entity_key`` for one string join key, as prefix + length + id.

    Checked against Feast's function on a probe id; if the layout ever differs, Feast's
    function itself is used.
    """
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    def feast_key(i: str) -> bytes:
        return serialize_entity_key(
            EntityKey(join_keys=[join_key], entity_values=[Value(string_val=i)]),
            entity_key_serialization_version=serialization_version,
        )

    prefix = feast_key("")[:-4]
    pack = struct.Struct("<I").pack

    def fast_key(i: str) -> bytes:
        b = i.encode("utf8")
        return prefix + pack(len(b)) + b

    probes = ("i000042", "ユーザー/7", "")
    if all(fast_key(p) == feast_key(p) for p in probes):
        return fast_key
    logger.warning("Feast's entity-key layout is not prefix+len+id; using serialize_entity_key")
    return feast_key


class SqliteRawSource:
    """One ``IN (...)`` query per view on Feast's SQLite table (read-only, one per thread).

    Feast's own connection parses every ``event_ts`` into a datetime; this one reads
    only the two value blobs.
    """

    #: Below SQLite's smallest default limit on bound parameters (999 before 3.32).
    CHUNK = 900

    def __init__(self, db_path: str, tables: dict[str, str], keys: dict[str, Callable]) -> None:
        self.uri = Path(db_path).resolve().as_uri() + "?mode=ro"
        self.tables = {v: '"' + t.replace('"', '""') + '"' for v, t in tables.items()}
        self.keys = keys
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.uri, uri=True)
            self._local.conn = conn
        return conn

    def fetch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[RawPair]]:
        conn = self._conn()
        out: list[list[RawPair]] = []
        for view, ids in requests:
            enc = self.keys[view]
            keys = [enc(i) for i in ids]
            found: dict[bytes, list[bytes | None]] = {}
            for start in range(0, len(keys), self.CHUNK):
                part = keys[start : start + self.CHUNK]
                sql = (
                    f"SELECT entity_key, feature_name, value FROM {self.tables[view]} "
                    "WHERE feature_name IN ('embedding', 'model_version') "
                    f"AND entity_key IN ({','.join('?' * len(part))})"
                )
                for key, name, value in conn.execute(sql, part):
                    found.setdefault(key, [None, None])[name == "model_version"] = value
            none: list[bytes | None] = [None, None]
            out.append([(p[0], p[1]) for p in (found.get(k, none) for k in keys)])
        return out


#: All of a request's ``HMGET``s in one server-side call. ``ARGV`` holds, per view, the
#: number of keys and the two hash fields; the reply is flat, two values per key
#: (Lua ``false`` comes back as nil for a missing field).
_HMGET_ALL = """
local out, k, a = {}, 1, 1
while a <= #ARGV do
  local n, fa, fb = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  for _ = 1, n do
    local v = redis.call('HMGET', KEYS[k], fa, fb)
    out[2 * k - 1] = v[1]
    out[2 * k] = v[2]
    k = k + 1
  end
  a = a + 3
end
return out
"""


class RedisRawSource:
    """``HMGET key <embedding field> <model_version field>`` for every id of every view.

    Keys and hash fields as Feast's ``RedisOnlineStore`` writes them: the serialised
    entity key + project, and ``mmh3("<view>:<feature>")``. On a single Redis the
    ``HMGET``s run in one Lua script (one command to pack and one reply to parse instead
    of one per id, which halves the client-side time); on a cluster, whose keys span
    slots, or where scripts are refused, they go as one pipeline.
    """

    def __init__(
        self,
        client: Any,
        project: str,
        fields: dict[str, list[bytes]],
        keys: dict[str, Callable],
        *,
        use_script: bool = True,
    ) -> None:
        self.client = client
        self.project = project.encode("utf8")
        self.fields = fields
        self.keys = keys
        self._script = client.register_script(_HMGET_ALL) if use_script else None

    def _keys(self, view: str, ids: Sequence[str]) -> list[bytes]:
        enc, project = self.keys[view], self.project
        return [enc(i) + project for i in ids]

    def fetch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[RawPair]]:
        if self._script is not None:
            from redis.exceptions import NoPermissionError, ResponseError

            try:
                flat = self._fetch_script(requests)
            except ResponseError as exc:
                # A server that forbids scripts (ACL, disabled EVAL) still serves HMGET.
                if not isinstance(exc, NoPermissionError) and "unknown command" not in str(exc):
                    raise
                logger.warning("Redis refused the read script (%s); using a pipeline", exc)
                self._script = None
            else:
                return _split(requests, list(zip(flat[::2], flat[1::2], strict=True)))
        return _split(requests, self._fetch_pipeline(requests))

    def _fetch_script(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[Any]:
        assert self._script is not None
        keys: list[bytes] = []
        args: list[Any] = []
        for view, ids in requests:
            keys += self._keys(view, ids)
            args += [len(ids), *self.fields[view]]
        return self._script(keys=keys, args=args)

    def _fetch_pipeline(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[RawPair]:
        with self.client.pipeline(transaction=False) as pipe:
            for view, ids in requests:
                fields = self.fields[view]
                for key in self._keys(view, ids):
                    pipe.execute_command("HMGET", key, *fields)
            return [(r[0], r[1]) for r in pipe.execute()]


def _split(
    requests: Sequence[tuple[str, Sequence[str]]], pairs: list[RawPair]
) -> list[list[RawPair]]:
    out: list[list[RawPair]] = []
    start = 0
    for _, ids in requests:
        out.append(pairs[start : start + len(ids)])
        start += len(ids)
    return out


class FeastRawSource:
    """Any other online store: Feast's ``online_read``, values re-serialised (slow path)."""

    def __init__(self, store: FeatureStore, views: dict[str, FeatureView]) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self.store = store
        self.views = views
        self._key = lambda jk, i: EntityKey(join_keys=[jk], entity_values=[Value(string_val=i)])

    def fetch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[RawPair]]:
        provider = self.store._get_provider()
        out: list[list[RawPair]] = []
        for view, ids in requests:
            jk = VIEWS[view].join_key
            keys = [self._key(jk, i) for i in ids]
            rows = provider.online_read(self.store.config, self.views[view], keys, [*VECTOR_FIELDS])
            out.append([_raw_pair(values) for _, values in rows])
        return out


def _raw_pair(values: dict[str, Any] | None) -> RawPair:
    values = values or {}
    emb, ver = values.get("embedding"), values.get("model_version")
    return (
        None if emb is None else emb.SerializeToString(),
        None if ver is None else ver.SerializeToString(),
    )


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
