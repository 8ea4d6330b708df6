"""Production profile with Redis or PostgreSQL down: fail in seconds, naming setting and address.

A closed port on loopback stands for the service that is down. The checks need no
service for the Redis case; the PostgreSQL case needs a real Redis (it is checked first)
and skips without the services of ``.ci/services.sh``.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from feature_repo.settings import FeastSettings
from feature_repo.store import check_services
from learn_core.settings import ServiceUnavailableError
from tests.cli_child import run_learnrec
from tests.integration.conftest import production_settings


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_down_is_named_within_seconds() -> None:
    port = closed_port()
    s = FeastSettings(profile="production", redis_url=f"redis://127.0.0.1:{port}/0")
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as err:
        check_services(s)
    assert time.monotonic() - t0 < 5
    assert "LEARNREC_FEAST_REDIS_URL" in str(err.value) and f"127.0.0.1:{port}" in str(err.value)


def test_postgres_down_is_named_within_seconds(tmp_path: Path) -> None:
    s = production_settings("t_down", tmp_path)
    port = closed_port()
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as err:
        check_services(s.model_copy(update={"pg_port": port}))
    assert time.monotonic() - t0 < 5
    assert "LEARNREC_FEAST_PG_HOST" in str(err.value) and f"127.0.0.1:{port}" in str(err.value)
    check_services(s)  # and the real services pass


def test_embedded_profile_has_nothing_to_check() -> None:
    check_services(FeastSettings(redis_url=f"redis://127.0.0.1:{closed_port()}/0"))


@pytest.mark.parametrize(
    "argv",
    [
        ["feast", "show"],
        ["feast", "apply"],
        ["consume-items", "--idle-exit", "1"],
        ["consume-interactions", "--idle-exit", "1"],
        ["rank", "u1"],
        ["serve", "--port", "8765"],
        ["run-job", "retrain"],
    ],
)
def test_commands_refuse_to_start_without_redis(argv: list[str], tmp_path: Path) -> None:
    port = closed_port()
    t0 = time.monotonic()
    out = run_learnrec(
        *argv,
        timeout=60,
        LEARNREC_FEAST_PROFILE="production",
        LEARNREC_FEAST_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        LEARNREC_FEAST_DATA_DIR=str(tmp_path),
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port()}",  # never reached
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert time.monotonic() - t0 < 15
    assert "LEARNREC_FEAST_REDIS_URL" in out.stderr and f"127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr
