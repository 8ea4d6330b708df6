"""The fast read's pure parts equal Feast's: entity-key bytes and the numpy decode."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import FloatList, Value

from feature_repo.online import (
    EmbeddingRows,
    RawPair,
    decode_rows,
    decode_vectors,
    entity_key_encoder,
)


@pytest.mark.parametrize("join_key", ["item_id", "user_id", "ключ"])
def test_entity_key_bytes_equal_feast_serialisation(join_key: str) -> None:
    enc = entity_key_encoder(join_key, 3)
    ids = ["", "i000001", "x" * 300, "é-ü/7", "アイテム", "a\x00b", "🙂"]
    for i in ids:
        want = serialize_entity_key(
            EntityKey(join_keys=[join_key], entity_values=[Value(string_val=i)]),
            entity_key_serialization_version=3,
        )
        assert enc(i) == want, i


def floats(vec: np.ndarray) -> bytes:
    return Value(float_list_val=FloatList(val=vec.tolist())).SerializeToString()


def unpacked_floats(vec: np.ndarray) -> bytes:
    """The same floats, one tag per element: valid protobuf, not what Python writes."""
    inner = b"".join(b"\x0d" + struct.pack("<f", x) for x in vec)
    assert len(inner) < 128 * 128
    n = len(inner)
    varint = bytes([(n & 0x7F) | 0x80, n >> 7]) if n >= 128 else bytes([n])
    return b"\x82\x01" + varint + inner


def version(s: str) -> bytes:
    return Value(string_val=s).SerializeToString()


def reference(raw: list[RawPair], want: str) -> EmbeddingRows:
    """``online_read``'s decode (``read_embeddings``) of the same bytes."""
    rows = []
    for emb, ver in raw:
        values = {}
        for name, b in (("embedding", emb), ("model_version", ver)):
            if b is not None:
                v = Value()
                v.ParseFromString(b)
                values[name] = v
        rows.append((None, values or None))
    return decode_rows(
        [str(r) for r in range(len(raw))], rows, ["embedding", "model_version"], want
    )


def check(raw: list[RawPair], want: str) -> np.ndarray:
    got = decode_vectors(raw, want)
    ref = reference(raw, want)
    np.testing.assert_array_equal(got.ok, ref.found)
    np.testing.assert_array_equal(got.vectors, ref.vectors)
    assert got.vectors.dtype == np.float32
    assert [got.version(r) for r in range(len(raw))] == ref.model_version
    return got.ok


def test_decode_equals_protobuf_parse_on_every_kind_of_row() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((8, 64)).astype(np.float32)
    vecs[0, :3] = [np.inf, -0.0, np.float32(1e-42)]  # odd floats survive bit for bit
    raw: list[RawPair] = [
        (floats(vecs[0]), version("v1")),
        (floats(vecs[1]), version("v2")),  # another model version
        (None, None),  # missing id
        (floats(vecs[2]), None),  # no version field
        (None, version("v1")),  # no vector
        (b"", version("v1")),  # empty value
        (unpacked_floats(vecs[3]), version("v1")),  # non-canonical bytes, same floats
        (floats(vecs[4][:32]), version("v1")),  # narrower than the rest: not found
        (floats(vecs[5]), version("v1")),
        (floats(vecs[6]), b""),  # version value with no string
    ]
    ok = check(raw, "v1")
    assert ok.tolist() == [True, False, False, False, False, False, True, False, True, False]
    assert check(raw, "v2").tolist() == [r == 1 for r in range(len(raw))]
    assert not check(raw, "v9").any()
    assert not check([], "v1").any()


def test_decode_of_many_rows_of_one_width() -> None:
    vecs = np.random.default_rng(1).standard_normal((300, 128)).astype(np.float32)
    raw = [(floats(v), version("m-7")) for v in vecs]
    got = decode_vectors(raw, "m-7")
    assert got.ok.all()
    np.testing.assert_array_equal(got.vectors, vecs)
    check(raw, "m-7")
