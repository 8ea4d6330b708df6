"""What a local broker is: its settings, its state file and the configs rendered for it.

Pure functions and data only (no process, no network), so they are unit-tested without a JVM.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from learn_core.settings import cache_dir

#: The variable that names an external broker; production processes must set it.
EXTERNAL_BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
STATE_FILE = "learnrec-kafka.json"
BROKER_LOG = "broker.log"
STDOUT_LOG = "stdout.log"
LOCALHOST = "127.0.0.1"


class BrokerSettings(BaseSettings):
    """How the local broker is fetched and run; defaults suit a 2-core laptop."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_BROKER_", extra="forbid", allow_inf_nan=False
    )

    #: Kafka release fetched from Maven Central; keep in step with pom.xml's kafka.version.
    version: str = "4.3.1"
    java: str = "java"
    mvn: str = "mvn"
    #: pom.xml listing the broker jars; default: the one shipped in devstack/kafka.
    pom: Path | None = None
    #: Data dir of `learnrec kafka up`, whose state file commands read when
    #: KAFKA_BOOTSTRAP_SERVERS is unset; default: <cache dir>/kafka/default.
    data_dir: Path | None = None
    heap_max: str = "512m"
    heap_min: str = "128m"
    extra_jvm_opts: str = ""
    #: How long `learnrec kafka up` waits for the broker to answer.
    start_timeout_s: float = Field(90.0, gt=0, le=3600)
    #: How long `learnrec kafka down` waits before it kills the broker.
    stop_timeout_s: float = Field(30.0, gt=0, le=3600)
    auto_create_topics: bool = False
    #: Partitions of the consumer-offsets topic, created on first group use; Kafka's 50
    #: take seconds to create on a small machine, and one broker gains nothing from them.
    offsets_partitions: int = Field(4, ge=1, le=1024)
    log_level: str = "INFO"

    def up_data_dir(self) -> Path:
        """The data dir of the broker that ``learnrec kafka up`` starts and commands use."""
        return (self.data_dir or cache_dir() / "kafka" / "default").resolve()


class BrokerError(RuntimeError):
    """The local broker could not be fetched, formatted, started or stopped."""


class BrokerState(BaseModel):
    """What ``status``, ``down`` and other commands need to find a broker another process started."""

    pid: int
    port: int
    controller_port: int
    data_dir: str
    version: str
    started_at: str

    @property
    def bootstrap(self) -> str:
        return f"{LOCALHOST}:{self.port}"


def read_state(data_dir: Path) -> BrokerState | None:
    """The state file of a broker started on ``data_dir``, or None if there is none."""
    path = data_dir / STATE_FILE
    if not path.is_file():
        return None
    return BrokerState.model_validate_json(path.read_text())


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    One id in 64 would begin with "-", which the storage tool's argument parser reads
    as an option; like Kafka's own ``Uuid.randomUuid`` we draw again.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def render_server_properties(
    *, port: int, controller_port: int, log_dir: Path, settings: BrokerSettings
) -> str:
    """``server.properties`` for one combined broker+controller node on loopback only."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A dynamic (KIP-853) quorum of one, as `kafka-storage format --standalone` expects.
        "controller.quorum.bootstrap.servers": f"{LOCALHOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOCALHOST}:{port},CONTROLLER://{LOCALHOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOCALHOST}:{port},CONTROLLER://{LOCALHOST}:{controller_port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": str(settings.offsets_partitions),
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "auto.create.topics.enable": str(settings.auto_create_topics).lower(),
        "delete.topic.enable": "true",
        # Tests start consumer groups all the time; the 3 s default delay only slows them.
        "group.initial.rebalance.delay.ms": "0",
        # Two cores: don't spawn threads that would only contend.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "4",
    }
    lines = ["# Written by learnrec (devstack/kafka/config.py); regenerated at every start."]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


def render_log4j2(log_file: Path, level: str = "INFO") -> str:
    """log4j2 config sending broker logs to one size-capped file instead of stdout."""
    return f"""\
# Written by learnrec (devstack/kafka/config.py).
status = warn
name = learnrec-kafka
appender.file.type = RollingFile
appender.file.name = File
appender.file.fileName = {log_file}
appender.file.filePattern = {log_file}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = File
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def previous_ports(data_dir: Path) -> tuple[int, int] | None:
    """Ports from an existing ``server.properties``: a formatted dynamic quorum keeps them."""
    config = data_dir / "server.properties"
    if not (data_dir / "kraft" / "meta.properties").is_file() or not config.is_file():
        return None
    props = dict(
        line.split("=", 1)
        for line in config.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    listeners = dict(item.split("://", 1) for item in props.get("listeners", "").split(","))
    try:
        return int(listeners["PLAINTEXT"].rsplit(":", 1)[1]), int(
            listeners["CONTROLLER"].rsplit(":", 1)[1]
        )
    except (KeyError, ValueError, IndexError):
        return None
