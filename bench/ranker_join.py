"""bench.ranker's training-set builds: through Feast's point-in-time join, and plain pandas.

Both give, for each labelled row, every view's newest row stamped at or before the row's
time, with columns ``<view>__<feature>`` (Feast's full feature names). The pandas join
is the reference the Feast build is checked against, and the cost Feast is timed against.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.ranker_data import EVENT_TS

log = logging.getLogger(__name__)
_SKIP = {EVENT_TS, "created"}


def pandas_join(
    entity_df: pd.DataFrame, sources: dict[str, tuple[pd.DataFrame, str]]
) -> pd.DataFrame:
    """``entity_df`` (any order) with each source's newest row at or before its time.

    ``sources`` maps a prefix (the view's name) to (rows, join key). Rows sharing key and
    stamp: the last one given wins, as a log's last write does.
    """
    when = pd.to_datetime(entity_df[EVENT_TS], utc=True).astype("datetime64[ns, UTC]")
    left = entity_df.assign(__pos=np.arange(len(entity_df)), __when=when)
    left = left.sort_values("__when", kind="stable")
    for prefix, (rows, key) in sources.items():
        feats = [c for c in rows.columns if c not in _SKIP and c != key]
        right = rows[[key, EVENT_TS, *feats]].rename(
            columns={EVENT_TS: "__when", **{f: f"{prefix}__{f}" for f in feats}}
        )
        right["__when"] = pd.to_datetime(right["__when"], utc=True).astype("datetime64[ns, UTC]")
        right = right.sort_values("__when", kind="stable").drop_duplicates(
            [key, "__when"], keep="last"
        )
        left = pd.merge_asof(
            left, right, on="__when", by=key, direction="backward", allow_exact_matches=True
        )
    left = left.sort_values("__pos").drop(columns=["__pos", "__when"])
    return left.reset_index(drop=True)


@dataclass
class FeastBuild:
    """A throwaway Feast project holding the ranker's views, in one profile."""

    handle: Any
    profile: str

    @classmethod
    def open(cls, profile: str, root: Path) -> FeastBuild:
        """Open a fresh project (production: Redis and PostgreSQL from the environment or
        ``.ci/services.sh``) and apply the product's and the ranking team's views."""
        from bench.ranking_store import production_settings
        from feature_repo.definitions import ranker_definitions
        from feature_repo.schema import RANKER_VIEWS
        from feature_repo.settings import FeastSettings
        from feature_repo.store import open_store
        from learn_core.settings import load

        project = f"ranker_{uuid.uuid4().hex[:8]}"
        data_dir = root / project
        if profile == "production":
            settings = production_settings(project, data_dir)
            if settings is None:
                raise RuntimeError(
                    "production profile: Redis/PostgreSQL not configured; run "
                    "`eval \"$(bash .ci/services.sh start | grep '^export ')\"`"
                )
        else:
            settings = load(FeastSettings, profile="embedded", project=project, data_dir=data_dir)
        handle = open_store(settings)
        extra = ranker_definitions(
            profile, project, settings.resolved_data_dir(), handle.definitions
        )
        handle.store.apply(extra.objects())
        for name in RANKER_VIEWS:
            handle.offline.ensure(name)
        return cls(handle, profile)

    def write(self, view: str, rows: pd.DataFrame, batch: int = 50_000) -> int:
        """Append a view's rows to the offline store (in batches: PostgreSQL's COPY)."""
        n = 0
        for s in range(0, len(rows), batch):
            n += self.handle.append_offline(view, rows.iloc[s : s + batch])
        return n

    def build(self, entity_df: pd.DataFrame, *services: str) -> tuple[pd.DataFrame, float]:
        """One ``get_historical_features`` over the feature services' views; its seconds."""
        refs = list(dict.fromkeys(r for s in services for r in self.refs(s)))
        t0 = time.monotonic()
        out = self.handle.historical(entity_df, refs, full_feature_names=True)
        return out, time.monotonic() - t0

    def refs(self, service: str) -> list[str]:
        fs = self.handle.store.get_feature_service(service)
        return [f"{p.name}:{f.name}" for p in fs.feature_view_projections for f in p.features]

    def close(self) -> None:
        from bench.ranking_store import cleanup
        from feature_repo.schema import RANKER_VIEWS

        if self.profile == "production":
            for name in RANKER_VIEWS:
                self.handle.offline.drop(name)
        cleanup(self.handle)


def same_frames(a: pd.DataFrame, b: pd.DataFrame, cols: list[str]) -> list[str]:
    """Columns whose values differ between two builds (vectors to 1e-6; NaN equals NaN)."""
    bad = []
    for c in cols:
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if x.dtype == object and len(x) and isinstance(_first(x, y), (list, np.ndarray)):
            nx = np.array([v is None or (np.isscalar(v) and pd.isna(v)) for v in x])
            ny = np.array([v is None or (np.isscalar(v) and pd.isna(v)) for v in y])
            if (nx != ny).any():
                bad.append(c)
                continue
            if (~nx).any():
                vx = np.stack([np.asarray(v, np.float32) for v in x[~nx]])
                vy = np.stack([np.asarray(v, np.float32) for v in y[~ny]])
                if vx.shape != vy.shape or not np.allclose(vx, vy, atol=1e-6):
                    bad.append(c)
            continue
        sx, sy = pd.Series(x), pd.Series(y)
        if pd.api.types.is_numeric_dtype(sx) or pd.api.types.is_numeric_dtype(sy):
            fx, fy = sx.astype(float).to_numpy(), sy.astype(float).to_numpy()
            if not np.allclose(fx, fy, equal_nan=True, atol=1e-9):
                bad.append(c)
        elif not sx.fillna("").astype(str).equals(sy.fillna("").astype(str)):
            bad.append(c)
    return bad


def _first(x: np.ndarray, y: np.ndarray) -> Any:
    for v in (*x, *y):
        if v is not None and not (np.isscalar(v) and pd.isna(v)):
            return v
    return None
