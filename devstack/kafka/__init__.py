"""A real single-node Apache Kafka (KRaft) broker from Maven Central jars, without Docker.

Tests, benchmarks and the demo need a real broker, and a laptop may have Java and Maven
but no Docker engine. Split by job: ``config`` (settings, state file, rendered configs),
``fetch`` (the jars), ``system`` (ports, pids), ``process`` (one broker's lifecycle) and
``cli`` (``learnrec kafka ...`` and the lookup of the broker of ``learnrec kafka up``).
"""

from devstack.kafka.cli import add_cli, up_bootstrap
from devstack.kafka.config import (
    EXTERNAL_BOOTSTRAP_ENV,
    STATE_FILE,
    BrokerError,
    BrokerSettings,
    BrokerState,
    read_state,
)
from devstack.kafka.fetch import fetch_jars
from devstack.kafka.process import (
    LocalKafka,
    owned_kafka,
    running_broker,
    start_local_kafka,
    stop_broker,
)
from devstack.kafka.system import free_port

__all__ = [
    "EXTERNAL_BOOTSTRAP_ENV",
    "STATE_FILE",
    "BrokerError",
    "BrokerSettings",
    "BrokerState",
    "LocalKafka",
    "add_cli",
    "fetch_jars",
    "free_port",
    "owned_kafka",
    "read_state",
    "running_broker",
    "start_local_kafka",
    "stop_broker",
    "up_bootstrap",
]
