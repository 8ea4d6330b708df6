"""The port every fast-read backend implements, and the entity-key bytes they share.

A backend reads the raw serialised ``(embedding, model_version)`` values of Feast's own
rows, in Feast's layout; decoding is the same for all of them (``decode.py``). One class
per backend, as Feast has one ``OnlineStore`` per backend: ``sqlite.py``, ``redis.py``,
and ``generic.py`` for any other store through Feast's ``online_read``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import Protocol

logger = logging.getLogger(__name__)

#: The two features the ranking reader needs from an embedding view.
VECTOR_FIELDS = ("embedding", "model_version")
#: Serialised ``ValueProto`` bytes of (``embedding``, ``model_version``) for one id;
#: ``None`` where the store holds no such field.
RawPair = tuple[bytes | None, bytes | None]
#: ``(view name, ids)``: one view's part of a read.
Request = tuple[str, Sequence[str]]


class RawVectorSource(Protocol):
    """One online store's read of raw ``(embedding, model_version)`` bytes, Feast's layout."""

    def fetch(self, requests: Sequence[Request]) -> list[list[RawPair]]:
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
