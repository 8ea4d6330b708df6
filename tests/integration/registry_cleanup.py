"""Test projects' rows in the shared PostgreSQL registry, removed after each test.

A module of its own, not ``conftest``: pytest loads ``conftest.py`` under its own name,
so tests that import ``tests.integration.conftest`` would fill another copy of the list.
"""

from __future__ import annotations

from feature_repo.settings import FeastSettings
from feature_repo.store import forget_project

#: production settings handed out during the current test, whose registry rows go after it
PRODUCTION_PROJECTS: list[FeastSettings] = []

__all__ = ["PRODUCTION_PROJECTS", "forget_project"]
