"""The compact ``/rank`` answer: raw little-endian float32 arrays behind a small JSON header.

A ``/rank`` answer for 100 candidates is about 144 KB of JSON (270 KB with float64
digits, as it was written first), and writing it is most of the server's CPU per request
(orjson of 13,000 floats), reading it most of the client's (``json.loads`` takes
milliseconds). The vectors are float32 in the store and out of the
CVR head, so the same values fit in 53 KB of raw bytes, written by one copy and read by
``np.frombuffer``. Clients ask for it with ``Accept: application/x-learnrec-rank``; JSON
stays the default. Feast's Java and Go servers answer protobuf for the same reason.

Layout (all integers little-endian; docs/ranking.md, "Over HTTP"):

* 4 bytes magic ``LRNK``, uint32 format version (1), uint32 header length ``H``;
* ``H`` bytes of UTF-8 JSON: ``model_version``, ``user_id``, ``item_ids``, ``status``,
  ``n``, ``dim``, ``mid_dim``, ``dtype`` (``"<f4"``), right-padded with spaces so that
  the arrays start on a 4-byte boundary;
* float32 ``user_embedding[dim]``, ``item_embeddings[n, dim]``, ``mid_emb[n, mid_dim]``,
  ``cvr[n]``, row-major, nothing after them.

The values are the float32 ones the JSON answer writes as decimals (exactly: the JSON
writes each float32's shortest decimal, which reads back to that float32), except that
rows whose status is not ``ok`` carry zeros (vectors) and NaN (CVR) where the JSON has
``null``.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from ranking.core import RankResult

#: The media type of this encoding (request it with ``Accept``).
MEDIA_TYPE = "application/x-learnrec-rank"
JSON_TYPE = "application/json"
MAGIC = b"LRNK"
VERSION = 1
DTYPE = "<f4"
_PREFIX = struct.Struct("<4sII")


class WireError(ValueError):
    """Bytes that are not a well-formed compact ``/rank`` answer."""


def encode_rank(result: RankResult) -> bytes:
    """``result`` in the compact form (one header, four float32 blocks)."""
    import orjson

    n, dim = len(result.item_ids), int(result.user_embedding.shape[0])
    mid_dim = int(result.mid_emb.shape[1]) if result.mid_emb.ndim == 2 else 0
    header = orjson.dumps(
        {
            "model_version": result.model_version,
            "user_id": result.user_id,
            "item_ids": result.item_ids,
            "status": result.status,
            "n": n,
            "dim": dim,
            "mid_dim": mid_dim,
            "dtype": DTYPE,
        }
    )
    header += b" " * (-(_PREFIX.size + len(header)) % 4)
    blocks = (
        (result.user_embedding, (dim,)),
        (result.item_embeddings, (n, dim)),
        (result.mid_emb, (n, mid_dim)),
        (result.cvr, (n,)),
    )
    parts = [_PREFIX.pack(MAGIC, VERSION, len(header)), header]
    for arr, shape in blocks:
        if arr.shape != shape:
            raise ValueError(f"array of shape {arr.shape}, expected {shape}")
        parts.append(np.ascontiguousarray(arr, dtype=DTYPE).tobytes())
    return b"".join(parts)


def decode_rank(data: bytes | bytearray | memoryview) -> RankResult:
    """The ``RankResult`` in ``data`` (arrays are read-only views of ``data``)."""
    import orjson

    buf = memoryview(data).cast("B")
    if len(buf) < _PREFIX.size:
        raise WireError(f"{len(buf)} bytes: shorter than the {_PREFIX.size}-byte prefix")
    magic, version, hlen = _PREFIX.unpack_from(buf)
    if magic != MAGIC:
        raise WireError(f"magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise WireError(f"format version {version}, this client reads {VERSION}")
    start = _PREFIX.size + hlen
    if start > len(buf):
        raise WireError(f"header of {hlen} bytes runs past the {len(buf)}-byte answer")
    try:
        head: dict[str, Any] = orjson.loads(bytes(buf[_PREFIX.size : start]))
        n, dim, mid_dim = (head[k] for k in ("n", "dim", "mid_dim"))
        ids, status, dtype = head["item_ids"], head["status"], head["dtype"]
        strings = (head["model_version"], head["user_id"], *ids, *status)
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise WireError(f"bad header: {type(exc).__name__}: {exc}") from exc
    if (
        dtype != DTYPE
        or not all(type(v) is int and v >= 0 for v in (n, dim, mid_dim))
        or not (isinstance(ids, list) and isinstance(status, list))
        or not all(isinstance(v, str) for v in strings)
        or len(ids) != n
        or len(status) != n
    ):
        raise WireError(f"bad header: dtype {dtype!r}, n={n!r}, dim={dim!r}, mid_dim={mid_dim!r}")
    sizes = (dim, n * dim, n * mid_dim, n)
    if start % 4 or len(buf) - start != 4 * sum(sizes):
        raise WireError(f"{len(buf) - start} bytes of arrays, expected {4 * sum(sizes)}")
    flat = np.frombuffer(buf, dtype=DTYPE, offset=start)
    ends = np.cumsum(sizes)
    user = flat[: ends[0]]
    items = flat[ends[0] : ends[1]].reshape(n, dim)
    mid = flat[ends[1] : ends[2]].reshape(n, mid_dim)
    cvr = flat[ends[2] : ends[3]]
    return RankResult(head["model_version"], head["user_id"], user, ids, status, items, mid, cvr)


def wants_binary(accept: str | None) -> bool | None:
    """Which ``/rank`` encoding an ``Accept`` header asks for.

    True: the compact form; False: JSON; None: neither is acceptable (HTTP 406). No header,
    or one with no media range this can parse, means JSON (RFC 9110 lets a server ignore
    an unparseable ``Accept``). The compact form is chosen only when named explicitly and
    with a quality not below JSON's, so ``*/*`` and browsers keep getting JSON.
    """
    if not accept:
        return False
    best: dict[str, float] = {}
    for part in accept.split(",")[:32]:  # a hostile header is not parsed without end
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        if media.count("/") != 1 or " " in media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
                if not 0.0 <= q <= 1.0:  # NaN fails too
                    q = -1.0
        if q >= 0:
            best[media] = max(q, best.get(media, 0.0))
    if not best:
        return False
    binary = best.get(MEDIA_TYPE, 0.0)
    # The most specific range that matches JSON sets its quality (RFC 9110, 12.5.1).
    json_q = next((best[m] for m in (JSON_TYPE, "application/*", "*/*") if m in best), 0.0)
    if binary > 0 and binary >= json_q:
        return True
    return False if json_q > 0 else None
