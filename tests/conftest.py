"""Shared fixtures: one real Kafka broker per test session, uuid-named topics per test.

The broker is chosen in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` if set (an external broker; CI or docker-compose);
2. a testcontainers ``apache/kafka`` container if a Docker engine answers quickly;
3. a local broker from Maven Central jars (``devstack.kafka``), the usual case here.

Only tests that ask for these fixtures start a broker, so ``tests/unit`` stays fast.
This module must not import Feast or torch; other engineers register their own fixture
modules by appending to ``pytest_plugins``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import pytest

from devstack.kafka import EXTERNAL_BOOTSTRAP_ENV, BrokerSettings, LocalKafka, start_local_kafka
from learn_core.runtime import keep_triton_out
from learn_core.settings import load
from streaming.admin import create_topics, delete_topics

log = logging.getLogger(__name__)

keep_triton_out()  # no screen of nanobind leak lines at the end of the run

# Fixture modules of other components (the Feast fixtures live in tests/integration/conftest.py).
pytest_plugins: list[str] = []


@dataclass
class KafkaService:
    """The session's broker: where it is, and the local process if we started one."""

    bootstrap: str
    kind: str  # "external" | "container" | "local"
    local: LocalKafka | None = None


def docker_available(timeout_s: float = 2.0) -> bool:
    """True if a Docker engine answers a ping within ``timeout_s``."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (DockerException, OSError):  # requests' ConnectionError is an OSError
        return False


def _container_kafka(version: str) -> Iterator[str]:
    """An ``apache/kafka`` KRaft container published on a fixed loopback port.

    testcontainers' own KafkaContainer drives Confluent images only; the Apache image is
    configured by ``KAFKA_*`` variables, and it must advertise the port the host sees, so
    the host port is chosen first and bound 1:1.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    from devstack.kafka import free_port

    port = free_port()
    container = (
        DockerContainer(f"apache/kafka:{version}")
        .with_bind_ports(port, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://localhost:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        )
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    with container:
        wait_for_logs(container, r"Kafka Server started", timeout=120)
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def kafka_service() -> Iterator[KafkaService]:
    """The session's real broker (see the module docstring for how it is chosen)."""
    external = os.environ.get(EXTERNAL_BOOTSTRAP_ENV, "").strip()
    if external:
        yield KafkaService(external, "external")
        return
    settings = load(BrokerSettings)  # bad LEARNREC_BROKER_* fails here, by name
    if docker_available():
        log.info("Docker answers: using an apache/kafka:%s container", settings.version)
        for bootstrap in _container_kafka(settings.version):
            yield KafkaService(bootstrap, "container")
        return
    local = start_local_kafka(settings=settings)
    try:
        yield KafkaService(local.bootstrap, "local", local)
    finally:
        local.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service: KafkaService) -> str:
    """``host:port`` of the session's real broker."""
    return kafka_service.bootstrap


@pytest.fixture
def local_kafka(kafka_service: KafkaService) -> Iterator[LocalKafka]:
    """The broker process itself, for tests that stop or restart it; skipped if external.

    Whatever the test did, the broker is running again afterwards, on the same address.
    """
    if kafka_service.local is None:
        pytest.skip(f"broker is {kafka_service.kind}; cannot restart it from the test")
    local = kafka_service.local
    yield local
    if not local.is_running():
        local.start()


TopicFactory = Callable[..., str]


@pytest.fixture
def topic_factory(kafka_service: KafkaService) -> Iterator[TopicFactory]:
    """Create uuid-named topics for one test; they are deleted when it ends.

    ``make(prefix="t", partitions=1, configs=None) -> name``.
    """
    kafka_bootstrap = kafka_service.bootstrap
    created: list[str] = []

    def make(
        prefix: str = "t", partitions: int = 1, configs: Mapping[str, str] | None = None
    ) -> str:
        name = f"test-{prefix}-{uuid.uuid4().hex[:12]}"
        create_topics(kafka_bootstrap, [name], partitions=partitions, configs=configs)
        created.append(name)
        return name

    yield make
    local = kafka_service.local
    if local is not None and not local.is_running():
        local.start()  # a fault test left it down; clean up anyway
    if created:
        delete_topics(kafka_bootstrap, created)
