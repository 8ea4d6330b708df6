"""Online writes without Feast's DataFrame conversion: the rows built as protos directly.

Why: ``FeatureStore.write_to_online_store(df)`` converts pandas -> arrow -> protos before
it reaches the store, and that costs 6.5 ms per call plus ~57 µs per row on SQLite
(docs/BENCHMARKS.md, issue 14). The interaction consumer writes once per micro-batch, so
at 1,000 events/s that fixed cost sits on every batch's freshness. Here the
``(EntityKey, {feature: Value}, event_ts, created_ts)`` rows are built from the columns
and handed to the provider's own ``online_write_batch``: the store's writer (its table
layout, the Redis event-time rule, TTLs) is Feast's, unchanged. Only the conversion is
ours, for the value types our views use; anything else (another type, a null) returns
``None`` and the caller takes Feast's path. Tested equal to Feast's conversion on both
profiles (tests/integration/test_online_write.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.schema import CREATED_TS, EVENT_TS

Row = tuple[Any, dict[str, Any], datetime, datetime | None]


def proto_rows(fv: Any, df: pd.DataFrame) -> list[Row] | None:
    """Feast's online rows for ``df`` under feature view ``fv``; None: not a case handled here."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import FloatList, Value
    from feast.value_type import ValueType

    keys = [(c.name, c.dtype.to_value_type()) for c in fv.entity_columns]
    features = [(f.name, f.dtype.to_value_type()) for f in fv.features]
    source = fv.batch_source
    if (
        source is None
        or source.field_mapping
        or source.timestamp_field != EVENT_TS
        or (source.created_timestamp_column or CREATED_TS) != CREATED_TS
        or len(keys) != 1
        or keys[0][1] != ValueType.STRING
    ):
        return None
    columns: dict[str, list[Any]] = {}
    for name, vtype in features:
        if name not in df.columns:
            return None
        col = df[name].tolist()
        if vtype == ValueType.FLOAT_LIST:
            built = []
            for v in col:
                if v is None:
                    return None
                arr = np.asarray(v, dtype=np.float32)
                if arr.ndim != 1 or not np.isfinite(arr).all():
                    return None  # Feast's path decides what a NaN or a ragged value means
                built.append(Value(float_list_val=FloatList(val=arr.tolist())))
        elif vtype == ValueType.STRING:
            if not all(isinstance(v, str) for v in col):
                return None
            built = [Value(string_val=v) for v in col]
        elif vtype == ValueType.INT64:
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in col):
                return None
            built = [Value(int64_val=v) for v in col]
        else:
            return None
        columns[name] = built
    key_name = keys[0][0]
    ids = df[key_name].tolist()
    if not all(isinstance(i, str) for i in ids):
        return None
    event_ts = _datetimes(df[EVENT_TS])
    created = _datetimes(df[CREATED_TS]) if CREATED_TS in df.columns else [None] * len(df)
    if event_ts is None or created is None:
        return None
    names = [name for name, _ in features]
    rows: list[Row] = []
    for r, iid in enumerate(ids):
        key = EntityKey(join_keys=[key_name], entity_values=[Value(string_val=iid)])
        rows.append((key, {n: columns[n][r] for n in names}, event_ts[r], created[r]))
    return rows


def _datetimes(col: pd.Series) -> list[datetime | None] | None:
    """Python datetimes as Feast's conversion makes them (``Timestamp.to_pydatetime``)."""
    if not isinstance(col.dtype, pd.DatetimeTZDtype) or col.isna().any():
        return None
    return [t.to_pydatetime() for t in col]
