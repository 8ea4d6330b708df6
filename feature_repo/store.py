"""Open the feature store of the configured profile and hand back one handle to it.

``open_store`` renders the profile's ``feature_store.yaml`` into the data dir (so that
the ``feast`` CLI can be pointed at it: ``feast -c <data_dir> feature-views list``),
builds the same configuration in memory with the connection values from
``FeastSettings`` (secrets never touch the disk), applies the definitions when the
registry lacks them, and prepares the offline logs the views read from.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import pandas as pd
import yaml

from feature_repo.offline_log.base import Cursor, OfflineLog
from feature_repo.offline_log.parquet import ParquetOfflineLog
from feature_repo.schema import EVENT_TS, LOGS, RANKER_VIEWS, VIEWS
from feature_repo.settings import FeastSettings, redis_connection_string
from learn_core.settings import ServiceUnavailableError

if TYPE_CHECKING:
    from feast import FeatureStore

    from feature_repo.definitions import Definitions
    from feature_repo.online import EmbeddingRows, OnlineEmbeddings

logger = logging.getLogger(__name__)

YAML_NAME = "feature_store.yaml"


def render_yaml(settings: FeastSettings) -> str:
    """The profile's yaml as written to disk: services only as ``${LEARNREC_FEAST_*}``."""
    text = resources.files("feature_repo").joinpath(f"profiles/{settings.profile}.yaml")
    redis = redis_connection_string(settings.redis_url).split(",password=")[0]
    return Template(text.read_text()).safe_substitute(
        project=settings.project,
        data_dir=str(settings.resolved_data_dir()),
        redis_connection=redis,
    )


def repo_config_dict(settings: FeastSettings) -> dict[str, Any]:
    """The rendered yaml with connection values filled in from ``settings`` (in memory)."""
    raw: dict[str, Any] = yaml.safe_load(render_yaml(settings))
    if settings.profile == "production":
        pw = settings.pg_password.get_secret_value()
        raw["registry"]["path"] = (
            f"postgresql+psycopg://{quote(settings.pg_user, safe='')}:{quote(pw, safe='')}"
            f"@{settings.pg_host}:{settings.pg_port}/{quote(settings.pg_db, safe='')}"
        )
        raw["online_store"]["connection_string"] = redis_connection_string(settings.redis_url)
        raw["offline_store"].update(
            host=settings.pg_host,
            port=settings.pg_port,
            database=settings.pg_db,
            user=settings.pg_user,
            password=pw,
            sslmode=settings.pg_sslmode,
        )
    return raw


def pg_conninfo(settings: FeastSettings) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        host=settings.pg_host,
        port=settings.pg_port,
        dbname=settings.pg_db,
        user=settings.pg_user,
        password=settings.pg_password.get_secret_value(),
        sslmode=settings.pg_sslmode,
    )


#: How long the start-up check waits for Redis or PostgreSQL before giving up.
CHECK_TIMEOUT_S = 3.0


def forget_project(settings: FeastSettings) -> None:
    """Delete a project's rows from the shared PostgreSQL SQL registry.

    Feast's SQL registry reads every project's rows when it refreshes, so projects left
    behind slow every later store on the same database: 178 left projects made one store
    test take 31 s instead of 1.2 s. Every registry table with a ``project_id`` column is
    cleared for this project; the project's data (offline tables, online rows) is the
    caller's to remove. No-op for the embedded profile (its registry is a file).
    """
    if settings.profile != "production":
        return
    import psycopg

    with psycopg.connect(pg_conninfo(settings), connect_timeout=5) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.columns "
            "WHERE column_name = 'project_id' AND table_schema = current_schema()"
        ).fetchall()
        for (table,) in tables:
            conn.execute(f'DELETE FROM "{table}" WHERE project_id = %s', (settings.project,))


def check_services(settings: FeastSettings, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Fail fast, naming the setting and the address, when a production service is down.

    Without it Feast and psycopg fail 6-12 s later with a raw traceback that names
    neither; the embedded profile has no services to check.
    """
    if settings.profile != "production":
        return
    import psycopg
    import redis

    parts = urlsplit(settings.redis_url)
    where = f"{parts.hostname}:{parts.port or 6379}"
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceUnavailableError(
            f"Redis (online store) at {where} does not answer: {str(exc).rstrip('.')}. "
            "Check LEARNREC_FEAST_REDIS_URL (and that Redis runs)."
        ) from None
    finally:
        client.close()
    try:
        psycopg.connect(pg_conninfo(settings), connect_timeout=max(1, round(timeout_s))).close()
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split()).rstrip(".?")
        raise ServiceUnavailableError(
            f"PostgreSQL (offline store, registry) at {settings.pg_host}:{settings.pg_port} "
            f"db={settings.pg_db} user={settings.pg_user} does not answer: {detail}. Check "
            "LEARNREC_FEAST_PG_HOST, _PG_PORT, _PG_DB, _PG_USER, _PG_PASSWORD, _PG_SSLMODE."
        ) from None


@dataclass
class FeatureStoreHandle:
    """The Feast store plus this project's offline log and fast online reader."""

    settings: FeastSettings
    store: FeatureStore
    definitions: Definitions
    offline: OfflineLog
    online: OnlineEmbeddings
    yaml_path: Path

    def write_online(self, view: str, df: pd.DataFrame) -> int:
        return self.online.write_online(view, df)

    def read_embeddings(
        self, view: str, ids: list[str], model_version: str | None = None
    ) -> EmbeddingRows:
        """Online rows of ``ids``; the model-made views need the ``model_version`` to read."""
        return self.online.read_embeddings(view, ids, model_version=model_version)

    def append_offline(self, name: str, df: pd.DataFrame) -> int:
        return self.offline.append(name, df)

    def read_offline(
        self, name: str, start: datetime | None = None, end: datetime | None = None
    ) -> pd.DataFrame:
        return self.offline.read_offline(name, start, end)

    def read_new(self, name: str, cursor: Cursor | None = None) -> tuple[pd.DataFrame, Cursor]:
        """Rows stored since ``cursor`` (``OfflineLog.read_new``) and the next cursor."""
        return self.offline.read_new(name, cursor)

    def historical(
        self, entity_df: pd.DataFrame, features: list[str], *, full_feature_names: bool = False
    ) -> pd.DataFrame:
        """Point-in-time join: for each entity row, the latest values at or before its time.

        Returns one row per row of ``entity_df``, in its order, with every column of it;
        features are null where no value existed yet. Feast's dask (file) store does
        neither: it drops an entity row whose entity has only later values, and merges
        rows sharing key and time (feast-dev/feast#6787). So Feast is asked once per
        distinct (keys, time) and the answer is joined back onto the caller's rows. With
        several views, the dropped row would take every view's values with it (a user's
        statistics lost because the item has none yet), so each view is asked alone, in
        chunks of ``LEARNREC_FEAST_HISTORICAL_CHUNK_ROWS`` entity rows: the dask store
        joins every entity row with all of its key's rows before it filters by time, so
        one query of 195,000 rows over ML-1M users' ~160 vectors each needed over 23 GB.
        """
        return point_in_time(
            self.store, entity_df, features, full_feature_names,
            chunk_rows=self.settings.historical_chunk_rows,
        )  # fmt: skip

    def check(self) -> None:
        """Raise ``ServiceUnavailableError`` when the store's services do not answer now."""
        check_services(self.settings, timeout_s=1.0)

    def close(self) -> None:
        self.offline.close()


def point_in_time(
    store: FeatureStore,
    entity_df: pd.DataFrame,
    features: list[str],
    full_feature_names: bool = False,
    *,
    chunk_rows: int,
) -> pd.DataFrame:
    """See ``FeatureStoreHandle.historical`` (``chunk_rows``: its
    ``LEARNREC_FEAST_HISTORICAL_CHUNK_ROWS``)."""
    views = list(dict.fromkeys(ref.split(":", 1)[0] for ref in features))
    known = {**VIEWS, **RANKER_VIEWS}
    unknown = set(views) - set(known)
    if unknown:
        raise KeyError(f"unknown views {sorted(unknown)}; known: {sorted(known)}")
    out = entity_df
    for view in views:
        refs = [r for r in features if r.split(":", 1)[0] == view]
        key = known[view].join_key
        out = _view_point_in_time(store, out, refs, key, full_feature_names, chunk_rows)
    return out


def _view_point_in_time(
    store: FeatureStore,
    entity_df: pd.DataFrame,
    features: list[str],
    key: str | None,
    full_feature_names: bool,
    chunk_rows: int,
) -> pd.DataFrame:
    """One view's point-in-time join onto ``entity_df`` (``point_in_time``)."""
    keys = [key] if key else []
    missing = [c for c in [*keys, EVENT_TS] if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df lacks columns {missing}")
    # Microseconds: PostgreSQL keeps no finer time, and the join back must match exactly.
    when = pd.to_datetime(entity_df[EVENT_TS], utc=True).dt.floor("us")
    request = entity_df[keys].assign(**{EVENT_TS: when}).drop_duplicates(ignore_index=True)
    answer = pd.concat(
        [
            _chunk_point_in_time(
                store, request.iloc[s : s + chunk_rows], features, full_feature_names
            )
            for s in range(0, max(len(request), 1), chunk_rows)
        ],
        ignore_index=True,
    )
    answer[EVENT_TS] = pd.to_datetime(answer[EVENT_TS], utc=True).dt.floor("us")
    feature_cols = [c for c in answer.columns if c not in (*keys, EVENT_TS)]
    answer = answer[[*keys, EVENT_TS, *feature_cols]].drop_duplicates([*keys, EVENT_TS])
    left = entity_df.drop(columns=[c for c in feature_cols if c in entity_df.columns])
    left = left.assign(__when=when.to_numpy())
    out = left.merge(answer.rename(columns={EVENT_TS: "__when"}), on=[*keys, "__when"], how="left")
    return out.drop(columns="__when")


def _chunk_point_in_time(
    store: FeatureStore,
    request: pd.DataFrame,
    features: list[str],
    full_feature_names: bool,
) -> pd.DataFrame:
    """Feast's answer for one chunk of ``request``. Feast's dask store cannot answer a
    chunk none of whose keys has any row in the view (its index divisions over an
    all-null column raise ``NotImplementedError``): such a chunk has no values, and gets
    nulls, as the rows would in a larger query."""
    try:
        return store.get_historical_features(
            entity_df=request, features=features, full_feature_names=full_feature_names
        ).to_df()
    except NotImplementedError as exc:
        if "Divisions calculation failed" not in str(exc):
            raise
        names = [
            r.replace(":", "__") if full_feature_names else r.split(":", 1)[1] for r in features
        ]
        return request.assign(**{name: None for name in names})


def _needs_apply(store: FeatureStore, defs: Definitions) -> bool:
    from feature_repo.definitions import DEFINITIONS_VERSION

    have = {v.name: v.tags.get("learnrec_definitions") for v in store.list_feature_views()}
    if any(have.get(name) != DEFINITIONS_VERSION for name in defs.views):
        return True
    services = {s.name for s in store.list_feature_services()}
    sources = {s.name for s in store.list_data_sources()}
    return not (set(defs.services) <= services and set(defs.sources) <= sources)


def open_offline_log(settings: FeastSettings) -> OfflineLog:
    """The offline log of the profile, with every log's storage created."""
    from feature_repo.definitions import OFFLINE_DIR

    log: OfflineLog
    if settings.profile == "embedded":
        parquet = ParquetOfflineLog(settings.resolved_data_dir() / OFFLINE_DIR)
        for name in LOGS:
            parquet.ensure(name)
        log = parquet
    else:
        from feature_repo.offline_log.postgres import PostgresOfflineLog

        pg = PostgresOfflineLog(pg_conninfo(settings), settings.project)
        for name in LOGS:
            pg.ensure(name)
        log = pg
    return log


def open_store(settings: FeastSettings | None = None, *, apply: bool = True) -> FeatureStoreHandle:
    """Open (and on first use, initialise) the feature store of ``settings.profile``.

    ``FEAST_FS_YAML_FILE_PATH``, when set, names a yaml to use instead of the rendered
    one (Feast expands its ``${VARS}`` from the environment).
    """
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from feature_repo.definitions import build_definitions
    from feature_repo.online import OnlineEmbeddings

    if settings is None:
        from learn_core.settings import load

        settings = load(FeastSettings)
    check_services(settings)
    data_dir = settings.resolved_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    yaml_path = data_dir / YAML_NAME
    text = render_yaml(settings)
    if not yaml_path.exists() or yaml_path.read_text() != text:
        tmp = yaml_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, yaml_path)

    override = os.environ.get("FEAST_FS_YAML_FILE_PATH")
    if override:
        store = FeatureStore(repo_path=str(data_dir), fs_yaml_file=Path(override))
    else:
        config = RepoConfig(**repo_config_dict(settings))
        config.repo_path = data_dir
        store = FeatureStore(repo_path=str(data_dir), config=config)

    offline = open_offline_log(settings)
    defs = build_definitions(settings.profile, settings.project, data_dir)
    if apply and _needs_apply(store, defs):
        logger.info("applying %d feature definitions to %s", len(defs.objects()), settings.profile)
        store.apply(defs.objects())
    logger.info("feature store open: profile=%s data_dir=%s", settings.profile, data_dir)
    return FeatureStoreHandle(
        settings=settings,
        store=store,
        definitions=defs,
        offline=offline,
        online=OnlineEmbeddings(store),
        yaml_path=yaml_path,
    )
