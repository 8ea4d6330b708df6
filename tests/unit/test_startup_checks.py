"""Start-up checks every command runs: unknown ``LEARNREC_*`` variables, flag ranges."""

from __future__ import annotations

from pathlib import Path

import pytest

from learn_core.settings import ConfigError, check_environment
from learnrec.cli import EXTRA_ENV_PREFIXES, known_env
from tests.cli_child import run_learnrec

ROOT = Path(__file__).resolve().parents[2]


def test_misspelled_variable_names_the_closest_one() -> None:
    with pytest.raises(ConfigError, match="did you mean LEARNREC_KAFKA_PARTITIONS"):
        check_environment(known_env(), environ={"LEARNREC_KAFKA_PARTITON": "3"})


def test_valid_and_allowed_variables_pass() -> None:
    env = {
        "LEARNREC_KAFKA_PARTITIONS": "3",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "LEARNREC_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "LEARNREC_CONSUMER_MAX_BATCH": "5",
        "LEARNREC_FEAST_PG_PASSWORD": "x",
        "LEARNREC_CACHE_DIR": "/tmp/x",
        "LEARNREC_SERVICES_DIR": "/tmp/s",
        "LEARNREC_FAULT_EVENTS": "10",
        "LEARNREC_RANKING_PORT": "8001",
    }
    check_environment(known_env(), allowed_prefixes=EXTRA_ENV_PREFIXES, environ=env)


def test_every_documented_variable_is_known() -> None:
    """The README's settings table and the check read the same classes."""
    import re

    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(LEARNREC_[A-Z0-9_]+)`", readme, re.M))
    assert documented and documented <= known_env()


def test_cli_refuses_a_typo_at_start_up() -> None:
    out = run_learnrec("dlq", timeout=60, LEARNREC_KAFKA_PARTITON="3")
    assert out.returncode == 2, out.stderr
    assert "LEARNREC_KAFKA_PARTITON" in out.stderr and "LEARNREC_KAFKA_PARTITIONS" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_port_flag_is_range_checked() -> None:
    out = run_learnrec("serve", "--port", "99999", timeout=60)
    assert out.returncode == 2, out.stderr
    assert "LEARNREC_RANKING_PORT" in out.stderr and "--port 99999" in out.stderr
    assert "Traceback" not in out.stderr
