"""Blue/green rows: the model-made views keep one online row per (model version, entity).

The user-tower and item-tower views are written and read under a *version-qualified*
entity id, ``"<model version>/<id>"`` (a version id never holds a ``/``), so a
candidate's backfill writes beside the serving version's rows instead of over them, and
a reader asks only for the rows of the version it serves. The offline logs keep the
plain id (their rows already carry ``model_version``). Content vectors
(``item_content_embedding``) belong to the content model, not to a trained version, and
keep plain ids.

``purge_version`` removes one version's rows once it has stopped serving (the retrain
job calls it after a grace period). Stock Feast reads a version's row with the same
qualified id: ``get_online_features(entity_rows=[{"item_id": online_id(v, "i1")}])``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from feature_repo.schema import ITEM_TOWER, USER_TOWER

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

logger = logging.getLogger(__name__)

#: Views whose online rows are keyed by (model version, entity).
VERSIONED_VIEWS = frozenset({ITEM_TOWER.name, USER_TOWER.name})
SEP = "/"


def check_version(version: str) -> str:
    if not version or SEP in version:
        raise ValueError(f"model version {version!r} cannot qualify an online key")
    return version


def online_id(version: str, entity_id: str) -> str:
    """The online store's entity id of ``entity_id``'s row made by ``version``."""
    return f"{check_version(version)}{SEP}{entity_id}"


def online_ids(view: str, version: str | None, ids: Sequence[str]) -> list[str]:
    """The ids to look up in ``view`` for ``version``'s rows (plain for other views)."""
    if view not in VERSIONED_VIEWS:
        return list(ids)
    if version is None:
        raise ValueError(f"{view} keeps one row per model version: name the version to read")
    prefix = check_version(version) + SEP
    return [prefix + i for i in ids]


def purge_version(store: FeatureStore, view: FeatureView, version: str, ids: Iterable[str]) -> int:
    """Delete ``version``'s rows of ``ids`` in ``view``; returns how many keys were asked.

    SQLite: one ``DELETE ... IN`` per chunk on Feast's table. Redis: ``HDEL`` of the view's
    fields and its ``_ts:`` field per key (the qualified key holds nothing else; an empty
    hash is removed by Redis). Other stores: Feast has no per-key delete, so the rows stay
    (logged).
    """
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, _table_id
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    if view.name not in VERSIONED_VIEWS:
        raise ValueError(f"{view.name} is not kept per model version")
    config = store.config
    join_key = view.join_keys[0]
    keys = [
        serialize_entity_key(
            EntityKey(join_keys=[join_key], entity_values=[Value(string_val=i)]),
            entity_key_serialization_version=config.entity_key_serialization_version,
        )
        for i in online_ids(view.name, version, list(ids))
    ]
    online = store._get_provider().online_store
    versioning = bool(config.registry.enable_online_feature_view_versioning)
    if isinstance(online, SqliteOnlineStore):
        conn = online._get_conn(config)
        table = '"' + _table_id(config.project, view, versioning).replace('"', '""') + '"'
        with conn:
            for s in range(0, len(keys), 900):
                part = keys[s : s + 900]
                conn.execute(
                    f"DELETE FROM {table} WHERE entity_key IN ({','.join('?' * len(part))})", part
                )
    elif isinstance(online, RedisOnlineStore):
        name = compute_versioned_name(view, versioning)
        fields = [_mmh3(f"{name}:{f.name}") for f in view.features] + [f"_ts:{name}".encode()]
        client = online._get_client(config.online_store)
        project = config.project.encode("utf8")
        for s in range(0, len(keys), 2000):
            with client.pipeline(transaction=False) as pipe:
                for k in keys[s : s + 2000]:
                    pipe.hdel(k + project, *fields)
                pipe.execute()
    else:
        logger.warning("%s: cannot delete rows of %s on %s", view.name, version, type(online))
        return 0
    return len(keys)
