"""Decoding Feast's serialised values into float32 matrices, shared by every backend.

``decode_rows`` turns ``online_read``'s protobuf rows into ``EmbeddingRows`` (the plain
path); ``decode_vectors`` turns the raw value bytes a fast backend fetched into
``VersionedVectors``, decoding equally long canonical float lists in one
``np.frombuffer``. Both apply one rule: a row counts when its version is the wanted one
and its vector has the widest width among such rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np

from feature_repo.online.base import RawPair


@dataclass
class EmbeddingRows:
    """Embeddings for ``ids`` in order; rows not found are zero with ``found`` False."""

    ids: list[str]
    vectors: np.ndarray
    model_version: list[str | None]
    found: np.ndarray
    event_timestamp: list[datetime | None]
    extra: dict[str, list[Any]]


def decode_rows(
    ids: list[str],
    rows: list[tuple[datetime | None, dict[str, Any] | None]],
    features: list[str],
    want_version: str | None,
) -> EmbeddingRows:
    """``online_read``'s ``(timestamp, {feature: ValueProto})`` rows -> ``EmbeddingRows``.

    With ``want_version`` set, rows of another model version count as not found.
    """
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
