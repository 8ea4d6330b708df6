"""Pure parts of the local-broker adapter: rendered configs, ids, state files, and how
commands find the broker of ``learnrec kafka up`` (or refuse). No JVM."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from devstack.kafka import (
    STATE_FILE,
    BrokerSettings,
    BrokerState,
    read_state,
    running_broker,
    up_bootstrap,
)
from devstack.kafka.config import (
    new_cluster_id,
    previous_ports,
    render_log4j2,
    render_server_properties,
)
from devstack.kafka.fetch import default_pom
from learn_core.settings import ConfigError, load
from streaming import kafka_io
from streaming.settings import KafkaSettings


def _props(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def test_pom_and_settings_name_the_same_kafka_version() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom_version = ET.parse(default_pom()).getroot().find("m:properties/m:kafka.version", ns)
    assert pom_version is not None
    assert pom_version.text == BrokerSettings().version


def test_server_properties_single_node_kraft_on_loopback(tmp_path: Path) -> None:
    props = _props(
        render_server_properties(
            port=19092, controller_port=19093, log_dir=tmp_path / "kraft", settings=BrokerSettings()
        )
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert "0.0.0.0" not in props["listeners"] + props["advertised.listeners"]
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
    ):
        assert props[key] == "1", key
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"] == str(tmp_path / "kraft")
    assert "controller.quorum.voters" not in props  # --standalone forbids it


def test_log4j2_config_writes_to_the_file_not_stdout(tmp_path: Path) -> None:
    text = render_log4j2(tmp_path / "broker.log", "WARN")
    assert f"appender.file.fileName = {tmp_path / 'broker.log'}" in text
    assert "rootLogger.level = WARN" in text
    assert "Console" not in text


def test_cluster_id_is_22_char_urlsafe_base64_of_16_bytes() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cid in ids:
        assert len(cid) == 22 and "=" not in cid
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_cluster_id_never_begins_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # The storage tool parses "--cluster-id -abc..." as a missing value (a CI failure).
    dash_first = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    draws = iter([dash_first, uuid.UUID(int=1)])
    monkeypatch.setattr("devstack.kafka.config.uuid.uuid4", lambda: next(draws))
    cid = new_cluster_id()
    assert not cid.startswith("-")
    assert cid == base64.urlsafe_b64encode(uuid.UUID(int=1).bytes).rstrip(b"=").decode()


def test_previous_ports_only_for_formatted_data_dirs(tmp_path: Path) -> None:
    text = render_server_properties(
        port=4001, controller_port=4002, log_dir=tmp_path / "kraft", settings=BrokerSettings()
    )
    (tmp_path / "server.properties").write_text(text)
    assert previous_ports(tmp_path) is None  # never formatted: ports are free to change
    (tmp_path / "kraft").mkdir()
    (tmp_path / "kraft" / "meta.properties").write_text("node.id=1\n")
    assert previous_ports(tmp_path) == (4001, 4002)


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNREC_BROKER_START_TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match="LEARNREC_BROKER_START_TIMEOUT_S"):
        load(BrokerSettings)


def test_state_of_a_dead_process_is_not_running(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = BrokerState(
        pid=dead.pid,
        port=1,
        controller_port=2,
        data_dir=str(tmp_path),
        version="4.3.1",
        started_at="2026-01-01T00:00:00+00:00",
    )
    (tmp_path / STATE_FILE).write_text(state.model_dump_json())
    assert read_state(tmp_path) == state
    assert running_broker(tmp_path) is None


# --------------------------------------------------- one broker story (issue 11, point 1)


def _up_settings(data_dir: Path) -> BrokerSettings:
    return BrokerSettings(data_dir=data_dir)


def test_no_broker_up_refuses_naming_the_variable_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        up_bootstrap(_up_settings(tmp_path))
    message = str(info.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in message and "learnrec kafka up" in message
    assert str(tmp_path / STATE_FILE) in message


def test_a_stale_state_file_is_no_broker(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = BrokerState(
        pid=dead.pid,
        port=1,
        controller_port=2,
        data_dir=str(tmp_path),
        version="4.3.1",
        started_at="2026-01-01T00:00:00+00:00",
    )
    (tmp_path / STATE_FILE).write_text(state.model_dump_json())
    with pytest.raises(ConfigError, match=f"pid {dead.pid} .* is not running"):
        up_bootstrap(_up_settings(tmp_path))


def test_up_data_dir_comes_from_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEARNREC_BROKER_DATA_DIR", str(tmp_path / "up"))
    assert load(BrokerSettings).up_data_dir() == (tmp_path / "up").resolve()
    monkeypatch.delenv("LEARNREC_BROKER_DATA_DIR")
    monkeypatch.setenv("LEARNREC_CACHE_DIR", str(tmp_path / "cache"))
    assert load(BrokerSettings).up_data_dir() == (tmp_path / "cache" / "kafka" / "default")


def test_stages_resolve_only_a_configured_or_installed_bootstrap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("LEARNREC_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setattr(kafka_io, "_bootstrap_fallback", None)
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS is not set"):
        kafka_io.resolve_bootstrap()
    kafka_io.set_bootstrap_fallback(lambda: "127.0.0.1:4242")
    assert kafka_io.resolve_bootstrap() == "127.0.0.1:4242"
    configured = KafkaSettings(bootstrap_servers="broker1:9092")
    assert kafka_io.resolve_bootstrap(configured) == "broker1:9092"


def test_produce_with_no_broker_up_exits_non_zero_and_says_why(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "LEARNREC_KAFKA_BOOTSTRAP_SERVERS")
    }
    env["LEARNREC_BROKER_DATA_DIR"] = str(tmp_path / "up")
    event = b'{"type":"item-created","item_id":"sku-1","title":"Trail running shoe"}\n'
    proc = subprocess.run(
        [sys.executable, "-m", "learnrec", "produce"],
        input=event,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    err = proc.stderr.decode()
    assert proc.returncode != 0, proc.stdout.decode()
    assert "KAFKA_BOOTSTRAP_SERVERS" in err and "learnrec kafka up" in err
    assert "Traceback" not in err
    assert b"sent" not in proc.stdout
