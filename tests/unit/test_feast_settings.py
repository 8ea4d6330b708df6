"""Feast settings and profile rendering: no services, no Feast import."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from feature_repo.settings import FeastSettings, redis_connection_string
from feature_repo.store import render_yaml, repo_config_dict
from learn_core.settings import ConfigError, load


def test_bad_profile_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNREC_FEAST_PROFILE", "cloud")
    with pytest.raises(ConfigError, match="LEARNREC_FEAST_PROFILE"):
        load(FeastSettings)


def test_bad_redis_url_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNREC_FEAST_REDIS_URL", "localhost:6379")
    with pytest.raises(ConfigError, match="LEARNREC_FEAST_REDIS_URL"):
        load(FeastSettings)


def test_default_data_dir_is_outside_the_clone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LEARNREC_CACHE_DIR", str(tmp_path))
    s = load(FeastSettings, project="demo")
    assert s.resolved_data_dir() == (tmp_path / "feast" / "demo").resolve()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6390/0", "127.0.0.1:6390,db=0"),
        ("redis://cache", "cache:6379"),
        ("redis://:s3cret@h:1/2", "h:1,db=2,password=s3cret"),
        ("rediss://h:1", "h:1,ssl=true"),
    ],
)
def test_redis_connection_string(url: str, expected: str) -> None:
    assert redis_connection_string(url) == expected


def test_embedded_yaml_points_everything_into_the_data_dir(tmp_path: Path) -> None:
    s = load(FeastSettings, data_dir=tmp_path, project="p1")
    raw = yaml.safe_load(render_yaml(s))
    assert raw["project"] == "p1"
    assert raw["registry"]["registry_type"] == "sql"
    assert raw["registry"]["path"] == f"sqlite:///{tmp_path.resolve()}/registry.db"
    assert raw["online_store"] == {"type": "sqlite", "path": f"{tmp_path.resolve()}/online.db"}
    assert raw["offline_store"]["type"] == "file"


def test_production_yaml_on_disk_has_no_secret_but_memory_config_does(tmp_path: Path) -> None:
    s = load(
        FeastSettings,
        profile="production",
        data_dir=tmp_path,
        pg_host="db.internal",
        pg_port=6543,
        pg_password="p@ss/word",
        redis_url="redis://:redispw@r:7000/1",
    )
    text = render_yaml(s)
    assert "p@ss" not in text and "redispw" not in text and "db.internal" not in text
    assert "${LEARNREC_FEAST_PG_PASSWORD}" in text
    raw = repo_config_dict(s)
    assert raw["offline_store"]["password"] == "p@ss/word"
    assert raw["offline_store"]["port"] == 6543
    # The password is URL-quoted inside the registry's SQLAlchemy URL.
    assert (
        raw["registry"]["path"]
        == "postgresql+psycopg://learnrec:p%40ss%2Fword@db.internal:6543/learnrec"
    )
    assert raw["online_store"]["connection_string"] == "r:7000,db=1,password=redispw"


def test_cli_registers_feast_subcommands() -> None:
    from feature_repo.cli import add_cli

    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["feast", "compact", "item_content_embedding"])
    assert args.name == "item_content_embedding" and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["feast", "drop-everything"])
