"""The real broker through the shared fixtures: round trip, topic admin, restarts, CLI, and
the one broker story (commands use the broker of ``learnrec kafka up`` or refuse)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from devstack.kafka import BrokerError, LocalKafka, add_cli, running_broker, start_local_kafka
from streaming.admin import (
    create_topics,
    delete_topics,
    end_offsets,
    list_topics,
    wait_for_deletion,
)

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


def _consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    """Read ``expected`` records from the start of ``topic`` with a fresh consumer group."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_produce_consume_round_trip(kafka_bootstrap: str, topic_factory) -> None:
    topic = topic_factory("roundtrip", partitions=3)
    sent = [(f"user-{i % 7}".encode(), f"event-{i}".encode()) for i in range(60)]
    _produce(kafka_bootstrap, topic, sent)

    offsets = end_offsets(kafka_bootstrap, topic)
    assert sorted(offsets) == [0, 1, 2]
    assert sum(offsets.values()) == len(sent)

    got = _consume_all(kafka_bootstrap, topic, len(sent))
    assert sorted((r.key, r.value) for r in got) == sorted(sent)
    # Keyed records stay together: each key lands in exactly one partition, in send order.
    partitions_by_key: dict[bytes, set[int]] = {}
    for r in got:
        partitions_by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partitions_by_key.values())
    for key in partitions_by_key:
        in_order = [r.value for r in sorted(got, key=lambda r: r.offset) if r.key == key]
        assert in_order == [v for k, v in sent if k == key]


def test_topic_create_delete_is_idempotent(kafka_bootstrap: str) -> None:
    name = f"test-admin-{uuid.uuid4().hex[:12]}"
    assert create_topics(
        kafka_bootstrap, [name], partitions=4, configs={"retention.ms": "60000"}
    ) == [name]
    try:
        assert create_topics(kafka_bootstrap, [name], partitions=4) == []  # exists: fine
        assert name in list_topics(kafka_bootstrap)
        assert end_offsets(kafka_bootstrap, name) == {0: 0, 1: 0, 2: 0, 3: 0}
    finally:
        assert delete_topics(kafka_bootstrap, [name]) == [name]
    wait_for_deletion(kafka_bootstrap, [name])
    assert name not in list_topics(kafka_bootstrap)
    assert delete_topics(kafka_bootstrap, [name]) == []  # gone: fine


def test_restart_keeps_data_and_address(local_kafka: LocalKafka, topic_factory) -> None:
    bootstrap = local_kafka.bootstrap
    topic = topic_factory("restart", partitions=2)
    before = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(20)]
    _produce(bootstrap, topic, before)
    old_pid = local_kafka.pid

    local_kafka.restart()

    assert local_kafka.bootstrap == bootstrap
    assert local_kafka.pid != old_pid and local_kafka.is_running()
    assert sum(end_offsets(bootstrap, topic).values()) == len(before)
    after = [(b"k-after", b"v-after")]
    _produce(bootstrap, topic, after)
    got = _consume_all(bootstrap, topic, len(before) + 1)
    assert sorted((r.key, r.value) for r in got) == sorted(before + after)


def test_hard_kill_keeps_acknowledged_records(local_kafka: LocalKafka, topic_factory) -> None:
    """SIGKILL loses no record the broker acknowledged (it is in the OS page cache)."""
    topic = topic_factory("kill", partitions=1)
    sent = [(None, f"m{i}".encode()) for i in range(50)]
    _produce(local_kafka.bootstrap, topic, sent)

    local_kafka.restart(hard=True)

    assert end_offsets(local_kafka.bootstrap, topic) == {0: len(sent)}
    got = _consume_all(local_kafka.bootstrap, topic, len(sent))
    assert [r.value for r in sorted(got, key=lambda r: r.offset)] == [v for _, v in sent]


def test_busy_port_is_refused_before_launch(kafka_service, tmp_path: Path) -> None:
    if kafka_service.local is None:
        pytest.skip("needs the local broker's jars")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BrokerError, match=f"{port}.*already in use"):
            start_local_kafka(tmp_path / "busy", port=port)
    assert not (tmp_path / "busy" / "server.properties").exists()


def test_start_failure_shows_the_logs(kafka_service, tmp_path: Path) -> None:
    """A JVM that dies while starting fails fast, with the tail of its output in the error."""
    if kafka_service.local is None:
        pytest.skip("needs the local broker's jars")
    settings = kafka_service.local.settings.model_copy(
        update={"extra_jvm_opts": "-XX:+ThisOptionDoesNotExist"}
    )
    with pytest.raises(BrokerError, match="format failed") as info:
        start_local_kafka(tmp_path / "bad", settings=settings)
    assert "ThisOptionDoesNotExist" in str(info.value)

    # Formatted storage: now the broker JVM itself is what dies.
    formatted = start_local_kafka(tmp_path / "formatted")
    formatted.shutdown()
    started = time.monotonic()
    with pytest.raises(BrokerError, match="exited with code") as info:
        start_local_kafka(tmp_path / "formatted", settings=settings)
    assert time.monotonic() - started < 30
    assert "stdout.log" in str(info.value) and "ThisOptionDoesNotExist" in str(info.value)


def test_cli_up_status_down(
    kafka_service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if kafka_service.local is None:
        pytest.skip("needs the local broker's jars")
    parser = argparse.ArgumentParser(prog="learnrec")
    add_cli(parser.add_subparsers(dest="command", required=True))
    data_dir = tmp_path / "cli"

    def run(*argv: str) -> int:
        args = parser.parse_args(["kafka", *argv, "--data-dir", str(data_dir)])
        return args.func(args)

    try:
        assert run("up") == 0
        bootstrap = capsys.readouterr().out.strip().splitlines()[-1]
        state = running_broker(data_dir.resolve())
        assert state is not None and state.bootstrap == bootstrap
        assert run("status") == 0
        assert bootstrap in capsys.readouterr().out
        assert run("up") == 0  # already running: says so, starts nothing
        assert "already running" in capsys.readouterr().out
    finally:
        assert run("down") == 0
    assert capsys.readouterr().out.strip() == "stopped"
    assert running_broker(data_dir.resolve()) is None
    assert run("status") == 1


def test_commands_use_the_broker_of_kafka_up(kafka_service, tmp_path: Path) -> None:
    """Issue 11, point 1: with KAFKA_BOOTSTRAP_SERVERS unset, `learnrec produce` lands in
    the broker of `learnrec kafka up`, and refuses once that broker is down."""
    if kafka_service.local is None:
        pytest.skip("needs the local broker's jars")
    tag = uuid.uuid4().hex[:8]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "LEARNREC_KAFKA_BOOTSTRAP_SERVERS")
    }
    env |= {
        "LEARNREC_BROKER_DATA_DIR": str(tmp_path / "up"),  # never the user's ~/.cache broker
        "LEARNREC_KAFKA_ITEMS_TOPIC": f"test-up-items-{tag}",
        "LEARNREC_KAFKA_INTERACTIONS_TOPIC": f"test-up-inter-{tag}",
        "LEARNREC_KAFKA_DLQ_TOPIC": f"test-up-dlq-{tag}",
        "LEARNREC_KAFKA_PARTITIONS": "1",
    }

    def learnrec(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "learnrec", *argv],
            input=stdin.decode(),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    event = b'{"type":"item-created","item_id":"sku-up-1","title":"Trail running shoe"}\n'
    up = learnrec("kafka", "up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        bootstrap = up.stdout.strip().splitlines()[-1]
        assert running_broker((tmp_path / "up").resolve()) is not None

        sent = learnrec("produce", stdin=event)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "sent 1 events, rejected 0" in sent.stdout

        got = _consume_all(bootstrap, f"test-up-items-{tag}", 1)
        assert [(r.key, json.loads(r.value)["item_id"]) for r in got] == [(b"sku-up-1", "sku-up-1")]
    finally:
        down = learnrec("kafka", "down")
    assert down.returncode == 0 and down.stdout.strip() == "stopped", down.stdout + down.stderr

    refused = learnrec("produce", stdin=event)
    assert refused.returncode != 0
    assert "KAFKA_BOOTSTRAP_SERVERS" in refused.stderr and "learnrec kafka up" in refused.stderr
    assert "sent" not in refused.stdout
