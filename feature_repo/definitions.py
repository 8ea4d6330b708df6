"""Feast objects: entities, sources, push sources, feature views and the ranking service.

The same views exist in both profiles; only the batch sources differ (a parquet
directory per view for ``embedded``, a PostgreSQL table for ``production``).
``build_definitions`` is what ``open_store`` applies; ``repo.py`` exposes the same
objects at module level for the ``feast`` CLI. Importing this module reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_source import DataSource
from feast.types import Array, Float32, Float64, Int64, String

from feature_repo import schema
from feature_repo.schema import CREATED_TS, EVENT_TS, LogSpec

#: Bump when a definition changes so that ``open_store`` re-applies on existing registries.
DEFINITIONS_VERSION = "1"
TAGS = {"learnrec_definitions": DEFINITIONS_VERSION}
#: Directory under the data dir holding the parquet logs (one sub-directory per log).
OFFLINE_DIR = "offline"
RANKING_SERVICE = "ranking"
#: A ranking team's feature services over its own views and LEARN's (docs/ranking.md, "A
#: ranker on LEARN's features"): ``A`` its statistics, ``B`` plus LEARN's user and item
#: vectors (C is B's vectors through the CVR head: mid-emb is computed at the join, as the
#: ranking reader computes it), ``A_id`` plus an ID model's vectors.
RANKER_SERVICES: dict[str, tuple[str, ...]] = {
    "ranker_a": (schema.USER_STATS.name, schema.ITEM_STATS.name),
    "ranker_b": (
        schema.USER_STATS.name,
        schema.ITEM_STATS.name,
        schema.USER_TOWER.name,
        schema.ITEM_TOWER.name,
    ),
    "ranker_a_id": (
        schema.USER_STATS.name,
        schema.ITEM_STATS.name,
        schema.ID_USER.name,
        schema.ID_ITEM.name,
    ),
}

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING)
_ENTITY_BY_KEY = {"user_id": user, "item_id": item}


def _feast_type(name: str) -> Any:
    spec_types = {
        "embedding": Array(Float32),
        "model_version": String,
        "history_len": Int64,
        "value": Float64,
        "events": Int64,
        "conversions": Int64,
        "first_event_s": Float64,
        "last_event_s": Float64,
    }
    return spec_types.get(name, String)


def pg_table(project: str, name: str) -> str:
    """PostgreSQL table behind a log: prefixed by project so projects can share a db."""
    return f"{project}_{name}"


def batch_source(log: LogSpec, profile: str, project: str, data_dir: Path) -> DataSource:
    if profile == "embedded":
        return FileSource(
            name=f"{log.name}_source",
            # A directory of part files: the dask offline store reads it as one dataset,
            # and appends add a file instead of rewriting one. Absolute, because the
            # `feast` CLI may run with a repo path other than the data dir.
            path=str(data_dir / OFFLINE_DIR / log.name),
            timestamp_field=EVENT_TS,
            created_timestamp_column=CREATED_TS,
            tags=TAGS,
        )
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )

    return PostgreSQLSource(
        name=f"{log.name}_source",
        table=pg_table(project, log.name),
        timestamp_field=EVENT_TS,
        created_timestamp_column=CREATED_TS,
        tags=TAGS,
    )


def _view(
    log: LogSpec, profile: str, project: str, data_dir: Path
) -> tuple[PushSource, FeatureView]:
    assert log.join_key is not None
    source = batch_source(log, profile, project, data_dir)
    push = PushSource(name=f"{log.name}_push", batch_source=source, tags=TAGS)
    fields = [Field(name=log.join_key, dtype=String)] + [
        Field(name=f, dtype=_feast_type(f)) for f in log.feature_names
    ]
    view = FeatureView(
        name=log.name,
        entities=[_ENTITY_BY_KEY[log.join_key]],
        schema=fields,
        source=push,
        online=True,
        tags=TAGS,
        description=f"{log.name}: every row carries the model_version that produced it",
    )
    return push, view


@dataclass
class Definitions:
    """Everything ``FeatureStore.apply`` needs, with lookups by name."""

    entities: list[Entity]
    sources: dict[str, DataSource]
    push_sources: dict[str, PushSource]
    views: dict[str, FeatureView]
    services: dict[str, FeatureService] = field(default_factory=dict)

    def objects(self) -> list[Any]:
        return [
            *self.entities,
            *self.sources.values(),
            *self.push_sources.values(),
            *self.views.values(),
            *self.services.values(),
        ]


def build_definitions(profile: str, project: str, data_dir: Path) -> Definitions:
    """The Feast objects of one profile (``embedded`` or ``production``)."""
    pushes: dict[str, PushSource] = {}
    views: dict[str, FeatureView] = {}
    for log in schema.VIEWS.values():
        pushes[log.name], views[log.name] = _view(log, profile, project, data_dir)
    interactions = batch_source(schema.INTERACTION_LOG, profile, project, data_dir)
    ranking = FeatureService(
        name=RANKING_SERVICE,
        features=[
            views[schema.USER_TOWER.name],
            views[schema.ITEM_TOWER.name],
            views[schema.ITEM_CONTENT.name],
        ],
        tags=TAGS,
    )
    return Definitions(
        entities=[user, item],
        sources={interactions.name: interactions},
        push_sources=pushes,
        views=views,
        services={ranking.name: ranking},
    )


def ranker_definitions(
    profile: str, project: str, data_dir: Path, base: Definitions
) -> Definitions:
    """The ranking team's views (``schema.RANKER_VIEWS``) and ``RANKER_SERVICES``, to apply
    beside ``base`` (the product's definitions, whose LEARN views the services read)."""
    pushes: dict[str, PushSource] = {}
    views: dict[str, FeatureView] = {}
    for log in schema.RANKER_VIEWS.values():
        pushes[log.name], views[log.name] = _view(log, profile, project, data_dir)
    every = {**base.views, **views}
    services = {
        name: FeatureService(name=name, features=[every[v] for v in members], tags=TAGS)
        for name, members in RANKER_SERVICES.items()
    }
    return Definitions(entities=[], sources={}, push_sources=pushes, views=views, services=services)
