"""The benchmarks leave nothing in the shared PostgreSQL registry.

Feast's SQL registry reads every project's rows at each refresh, so projects left there
by benchmark runs made each later store on that database slower (83 left projects
were found on a developer's database: a production test's store took 13-23 s to open).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg

from bench.ranking_store import cleanup
from feature_repo.store import open_store, pg_conninfo
from tests.integration.conftest import production_settings


def registry_rows(settings, project: str) -> int:  # noqa: ANN001 - FeastSettings
    with psycopg.connect(pg_conninfo(settings)) as conn:
        row = conn.execute("SELECT count(*) FROM projects WHERE project_id = %s", (project,))
        return int(row.fetchone()[0])


def test_bench_cleanup_forgets_its_project(tmp_path: Path) -> None:
    settings = production_settings(f"bench_{uuid.uuid4().hex[:10]}", tmp_path)
    handle = open_store(settings)
    assert registry_rows(settings, settings.project) == 1
    cleanup(handle)
    assert registry_rows(settings, settings.project) == 0
