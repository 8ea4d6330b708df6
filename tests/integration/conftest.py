"""Fixtures for the Feast store in both profiles.

``feast_handle`` is parametrised over ``embedded`` (SQLite + parquet in a tmp dir; always
runs) and ``production`` (Redis + PostgreSQL). The production case reads its connection
settings from ``LEARNREC_FEAST_*``; when those are unset but ``.ci/services.sh`` has
started services on this machine, it asks the script for them. It skips, saying why,
only when the services cannot be reached. Every test gets its own Feast project (a uuid
name) so that tests never see each other's rows in the shared Redis and PostgreSQL.
``private_redis`` is a ``redis-server`` of the test's own, for tests that crash it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from feature_repo.schema import LOGS, RANKER_VIEWS
from feature_repo.settings import FeastSettings
from feature_repo.store import FeatureStoreHandle, open_store
from learn_core.settings import load
from tests.integration.registry_cleanup import PRODUCTION_PROJECTS, forget_project

if TYPE_CHECKING:
    from tests.integration.stream_checks import PrivateRedis

SERVICES_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "services.sh"


def _reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _services_env() -> dict[str, str]:
    """LEARNREC_FEAST_* from the environment, else from ``.ci/services.sh env``."""
    env = {k: v for k, v in os.environ.items() if k.startswith("LEARNREC_FEAST_")}
    if "LEARNREC_FEAST_PG_PASSWORD" in env:
        return env
    base = Path(os.environ.get("LEARNREC_SERVICES_DIR", "/tmp/learnrec-services"))
    if (base / "pg" / "password").exists():
        out = subprocess.run(
            ["bash", str(SERVICES_SCRIPT), "env"], capture_output=True, text=True, check=True
        ).stdout
        for line in out.splitlines():
            if line.startswith("export "):
                k, _, v = line[len("export ") :].partition("=")
                env.setdefault(k, v)
    return env


def production_settings(project: str, data_dir: Path) -> FeastSettings:
    """Production settings for a test, or ``pytest.skip`` naming what is missing."""
    env = _services_env()
    if "LEARNREC_FEAST_PG_PASSWORD" not in env:
        pytest.skip(
            "production profile: LEARNREC_FEAST_PG_* not set and no services from "
            '.ci/services.sh found; run `eval "$(.ci/services.sh start)"`'
        )
    fields = {k[len("LEARNREC_FEAST_") :].lower(): v for k, v in env.items()}
    fields = {k: v for k, v in fields.items() if k in FeastSettings.model_fields}
    fields.update(profile="production", project=project, data_dir=data_dir)
    settings = load(FeastSettings, **fields)
    redis = urlsplit(settings.redis_url)
    for what, host, port in (
        ("PostgreSQL", settings.pg_host, settings.pg_port),
        ("Redis", redis.hostname or "", redis.port or 6379),
    ):
        if not _reachable(host, port):
            pytest.skip(f"production profile: {what} not reachable at {host}:{port}")
    return settings


def make_settings(profile: str, data_dir: Path) -> FeastSettings:
    project = f"t_{uuid.uuid4().hex[:12]}"
    if profile == "embedded":
        return load(FeastSettings, profile="embedded", project=project, data_dir=data_dir)
    settings = production_settings(project, data_dir)
    PRODUCTION_PROJECTS.append(settings)
    return settings


@pytest.fixture(autouse=True)
def _forget_production_projects() -> Iterator[None]:
    yield
    import psycopg

    while PRODUCTION_PROJECTS:
        settings = PRODUCTION_PROJECTS.pop()
        try:
            forget_project(settings)
        except psycopg.Error as exc:  # a test's PostgreSQL outage must not fail the next
            warnings.warn(f"registry rows of {settings.project} left: {exc}", stacklevel=1)


def cleanup(handle: FeatureStoreHandle) -> None:
    """Remove this test's online rows and offline tables; leave the shared registry be.

    ``FeatureStore.teardown`` would also drop the SQL registry's tables, which other
    tests running against the same PostgreSQL still use.
    """
    store = handle.store
    views = list(handle.definitions.views.values())
    store._get_provider().teardown_infra(store.project, views, handle.definitions.entities)
    if handle.settings.profile == "production":
        from feature_repo.offline_log.postgres import PostgresOfflineLog

        assert isinstance(handle.offline, PostgresOfflineLog)
        for name in (*LOGS, *RANKER_VIEWS):  # the ranker's, where a test made them
            handle.offline.drop(name)
    handle.close()


@pytest.fixture(params=["embedded", "production"])
def feast_profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def feast_settings(feast_profile: str, tmp_path: Path) -> FeastSettings:
    return make_settings(feast_profile, tmp_path / "feast")


@pytest.fixture
def feast_handle(feast_settings: FeastSettings) -> Iterator[FeatureStoreHandle]:
    handle = open_store(feast_settings)
    try:
        yield handle
    finally:
        cleanup(handle)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A ``redis-server`` of the test's own, to crash and restart."""
    from tests.integration.stream_checks import PrivateRedis  # it imports this module

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/services.sh installs it)")
    server = PrivateRedis(tmp_path / "private-redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()
