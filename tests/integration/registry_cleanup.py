"""Test projects' rows in the shared PostgreSQL registry, removed after each test.

A module of its own, not ``conftest``: pytest loads ``conftest.py`` under its own name,
so tests that import ``tests.integration.conftest`` would fill another copy of the list.
"""

from __future__ import annotations

from feature_repo.settings import FeastSettings
from feature_repo.store import pg_conninfo

#: production settings handed out during the current test, whose registry rows go after it
PRODUCTION_PROJECTS: list[FeastSettings] = []


def forget_project(settings: FeastSettings) -> None:
    """Delete a test project's rows from the shared SQL registry.

    Feast's SQL registry reads every project's rows when it refreshes, so projects left
    behind slow each later test's store: 178 left projects made one store test take 31 s
    instead of 1.2 s. Every table with a ``project_id`` column is cleared for this project.
    """
    import psycopg

    with psycopg.connect(pg_conninfo(settings), connect_timeout=5) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.columns "
            "WHERE column_name = 'project_id' AND table_schema = current_schema()"
        ).fetchall()
        for (table,) in tables:
            conn.execute(f'DELETE FROM "{table}" WHERE project_id = %s', (settings.project,))
