"""Raw reads from any other online store, through Feast's own ``online_read`` (slow path)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from feature_repo.online.base import VECTOR_FIELDS, RawPair, Request
from feature_repo.schema import VIEWS

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView


class FeastRawSource:
    """Any other online store: Feast's ``online_read``, values re-serialised (slow path)."""

    def __init__(self, store: FeatureStore, views: dict[str, FeatureView]) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self.store = store
        self.views = views
        self._key = lambda jk, i: EntityKey(join_keys=[jk], entity_values=[Value(string_val=i)])

    def fetch(self, requests: Sequence[Request]) -> list[list[RawPair]]:
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
