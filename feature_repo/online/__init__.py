"""Online store adapters: embedding writes and fast reads, one module per backend.

* ``embeddings``: ``OnlineEmbeddings``, the writer and readers the rest of the code uses,
  and ``make_raw_source``, which picks the fast-read backend for a store;
* ``base``: the fast-read port (``RawVectorSource``) and Feast's entity-key bytes;
* ``sqlite``, ``redis``, ``generic``: one ``RawVectorSource`` per backend (``generic``:
  any other store through Feast's ``online_read``);
* ``decode``: protobuf values -> float32 matrices, shared by all of them;
* ``versions``: blue/green keys, one row per (model version, entity) in the model-made
  views, and the purge of a retired version's rows.
"""

from feature_repo.online.base import (
    VECTOR_FIELDS,
    RawPair,
    RawVectorSource,
    Request,
    entity_key_encoder,
)
from feature_repo.online.decode import (
    EmbeddingRows,
    VersionedVectors,
    decode_rows,
    decode_vectors,
)
from feature_repo.online.embeddings import OnlineEmbeddings, make_raw_source
from feature_repo.online.generic import FeastRawSource
from feature_repo.online.redis import RedisRawSource
from feature_repo.online.sqlite import SqliteRawSource
from feature_repo.online.versions import VERSIONED_VIEWS, online_id, online_ids

__all__ = [
    "VECTOR_FIELDS",
    "EmbeddingRows",
    "FeastRawSource",
    "OnlineEmbeddings",
    "RawPair",
    "RawVectorSource",
    "RedisRawSource",
    "Request",
    "SqliteRawSource",
    "VERSIONED_VIEWS",
    "VersionedVectors",
    "decode_rows",
    "decode_vectors",
    "entity_key_encoder",
    "make_raw_source",
    "online_id",
    "online_ids",
]
