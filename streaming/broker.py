"""A real single-node Apache Kafka (KRaft) broker, run from Maven Central jars without Docker.

Tests, benchmarks and the demo need a real broker, and this machine has Java and Maven but
no Docker engine. So: Maven copies the broker jars into ``cache_dir()/kafka/<version>/libs``
(once per machine), and each broker gets a data directory holding its ``server.properties``,
a log4j2 config (the broker logs to ``broker.log`` there, not to the terminal), its KRaft
storage and a ``learnrec-kafka.json`` state file that ``learnrec kafka status|down`` read.

Python API::

    kafka = start_local_kafka()          # fresh temporary data dir, free ports
    produce_to(kafka.bootstrap)          # "127.0.0.1:<port>"
    kafka.restart()                      # same data and ports: for fault tests
    kafka.stop()                         # stops, and removes a temporary data dir

``ensure_kafka()`` prefers an external broker named by ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from learn_core.settings import cache_dir, load

log = logging.getLogger(__name__)

EXTERNAL_BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
STATE_FILE = "learnrec-kafka.json"
BROKER_LOG = "broker.log"
STDOUT_LOG = "stdout.log"
_LIBS_MANIFEST = "libs.json"
_LOCALHOST = "127.0.0.1"


class BrokerSettings(BaseSettings):
    """How the local broker is fetched and run; defaults suit a 2-core laptop."""

    model_config = SettingsConfigDict(env_prefix="LEARNREC_BROKER_", extra="forbid")

    # Kafka release fetched from Maven Central; keep in step with pom.xml's kafka.version.
    version: str = "4.3.1"
    java: str = "java"
    mvn: str = "mvn"
    # pom.xml listing the broker jars; default: the one at the repository root.
    pom: Path | None = None
    heap_max: str = "512m"
    heap_min: str = "128m"
    extra_jvm_opts: str = ""
    start_timeout_s: float = 90.0
    stop_timeout_s: float = 30.0
    auto_create_topics: bool = False
    # The consumer-offsets topic is created on first group use; 50 partitions (Kafka's
    # default) take seconds to create on a small machine, and one broker gains nothing.
    offsets_partitions: int = 4
    log_level: str = "INFO"


class BrokerError(RuntimeError):
    """The local broker could not be fetched, formatted, started or stopped."""


class BrokerState(BaseModel):
    """What ``status`` and ``down`` need to find a broker started by another process."""

    pid: int
    port: int
    controller_port: int
    data_dir: str
    version: str
    started_at: str

    @property
    def bootstrap(self) -> str:
        return f"{_LOCALHOST}:{self.port}"


# --------------------------------------------------------------------------- jars


def kafka_home(version: str) -> Path:
    """Per-version cache folder; the jars live in its ``libs`` subfolder."""
    return cache_dir() / "kafka" / version


def default_pom() -> Path:
    return Path(__file__).resolve().parents[1] / "pom.xml"


def fetch_jars(settings: BrokerSettings | None = None) -> Path:
    """Copy the broker jars and their runtime dependencies into the cache; skip if there.

    Maven downloads into ``~/.m2`` and copies into a temporary folder that is renamed into
    place only when complete, so an interrupted fetch is never mistaken for a cached one.
    """
    settings = settings or load(BrokerSettings)
    home = kafka_home(settings.version)
    libs = home / "libs"
    if (home / _LIBS_MANIFEST).is_file() and libs.is_dir():
        return libs
    pom = settings.pom or default_pom()
    if not pom.is_file():
        raise BrokerError(f"pom.xml not found at {pom}; set LEARNREC_BROKER_POM")
    if shutil.which(settings.mvn) is None:
        raise BrokerError(
            f"Maven ({settings.mvn!r}) not on PATH; install it or set LEARNREC_BROKER_MVN"
        )
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
    cmd = [
        settings.mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-Dkafka.version={settings.version}",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    log.info("fetching Kafka %s jars with Maven into %s", settings.version, libs)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(
            f"mvn failed ({proc.returncode}) fetching Kafka {settings.version}:\n"
            + _tail_text(proc.stdout + proc.stderr, 30)
        )
    jars = sorted(p.name for p in staging.glob("*.jar"))
    if not any(j.startswith(f"kafka_2.13-{settings.version}") for j in jars):
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(f"mvn copied no kafka_2.13-{settings.version} jar into {staging}")
    try:
        staging.rename(libs)
    except OSError:
        # Another process finished first; its copy is as good as ours.
        shutil.rmtree(staging, ignore_errors=True)
    manifest = {"version": settings.version, "jars": jars, "fetched_at": _now()}
    (home / _LIBS_MANIFEST).write_text(json.dumps(manifest, indent=2))
    log.info("fetched %d jars in %.1fs", len(jars), time.monotonic() - started)
    return libs


# ------------------------------------------------------------------ configuration


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    One id in 64 would begin with "-", which the storage tool's argument parser reads
    as an option; like Kafka's own ``Uuid.randomUuid`` we draw again.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_LOCALHOST, 0))
        return int(s.getsockname()[1])


def render_server_properties(
    *, port: int, controller_port: int, log_dir: Path, settings: BrokerSettings
) -> str:
    """``server.properties`` for one combined broker+controller node on loopback only."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A dynamic (KIP-853) quorum of one, as `kafka-storage format --standalone` expects.
        "controller.quorum.bootstrap.servers": f"{_LOCALHOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{_LOCALHOST}:{port},CONTROLLER://{_LOCALHOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{_LOCALHOST}:{port},CONTROLLER://{_LOCALHOST}:{controller_port}",
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
    lines = ["# Written by learnrec (streaming/broker.py); regenerated at every start."]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


def render_log4j2(log_file: Path, level: str = "INFO") -> str:
    """log4j2 config sending broker logs to one size-capped file instead of stdout."""
    return f"""\
# Written by learnrec (streaming/broker.py).
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


# ------------------------------------------------------------------------- broker


class LocalKafka:
    """One local broker process: its data dir, ports and (while running) its pid.

    The data dir and both ports are fixed for the object's life, so ``restart()`` brings
    back the same topics at the same bootstrap address.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int,
        settings: BrokerSettings,
        *,
        ephemeral: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.controller_port = controller_port
        self.settings = settings
        self.ephemeral = ephemeral
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{_LOCALHOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / BROKER_LOG

    def __repr__(self) -> str:
        return f"LocalKafka(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r}, pid={self.pid})"

    def __enter__(self) -> LocalKafka:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle

    def start(self, *, detach: bool = False) -> None:
        """Format storage if new, launch the JVM and wait until the broker serves metadata.

        ``detach=True`` leaves the broker running when this Python process exits (the CLI's
        ``up``); otherwise it is stopped at interpreter exit as a safety net.
        """
        if self.is_running():
            return
        libs = fetch_jars(self.settings)
        # A busy port makes the JVM log a fatal error but take ~30 s to exit; say so now.
        busy = [p for p in (self.port, self.controller_port) if not _port_free(p)]
        if busy:
            raise BrokerError(f"port(s) {busy} on {_LOCALHOST} already in use; pick another --port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "kraft" / "meta.properties").is_file():
            self._format(libs, config)
        out = (self.data_dir / STDOUT_LOG).open("ab")
        cmd = [
            self.settings.java,
            *self._jvm_opts(),
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(config),
        ]
        log.info(
            "starting Kafka %s on %s (data %s)",
            self.settings.version,
            self.bootstrap,
            self.data_dir,
        )
        started = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        self.pid = self._proc.pid
        self._write_state()
        try:
            self._wait_ready()
        except BaseException:
            self.shutdown(hard=True)
            raise
        if not detach:
            atexit.register(self._stop_at_exit)
        log.info(
            "Kafka ready at %s in %.1fs (pid %d)",
            self.bootstrap,
            time.monotonic() - started,
            self.pid,
        )

    def shutdown(self, *, hard: bool = False) -> None:
        """Stop the process but keep the data: SIGTERM (or SIGKILL if ``hard``), then wait."""
        if self.pid is None:
            return
        _stop_pid(self.pid, self.settings.stop_timeout_s, hard=hard, proc=self._proc)
        self.pid = None
        self._proc = None
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the broker; a temporary (ephemeral) data dir is removed too."""
        self.shutdown()
        atexit.unregister(self._stop_at_exit)
        if self.ephemeral:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self, *, hard: bool = False) -> None:
        """Stop and start again on the same data dir and ports (fault tests).

        After ``hard=True`` (SIGKILL) the controller refuses the new incarnation until the
        old one's session expires (``broker.session.timeout.ms``, 9 s), so it takes ~15 s.
        """
        self.shutdown(hard=hard)
        self.start()

    def is_running(self) -> bool:
        if self.pid is None:
            return False
        if self._proc is not None:
            return self._proc.poll() is None
        return _pid_is_broker(self.pid, self.data_dir)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the broker log and of the JVM's stdout, for error messages."""
        parts = []
        for name in (BROKER_LOG, STDOUT_LOG):
            path = self.data_dir / name
            if path.is_file():
                parts.append(f"--- {path} (last {lines} lines)\n{_tail_file(path, lines)}")
        return "\n".join(parts) or f"(no logs in {self.data_dir})"

    # -- internals

    def _jvm_opts(self) -> list[str]:
        return [
            f"-Xmx{self.settings.heap_max}",
            f"-Xms{self.settings.heap_min}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            *self.settings.extra_jvm_opts.split(),
        ]

    def _write_config(self) -> Path:
        (self.data_dir / "log4j2.properties").write_text(
            render_log4j2(self.log_file, self.settings.log_level)
        )
        config = self.data_dir / "server.properties"
        config.write_text(
            render_server_properties(
                port=self.port,
                controller_port=self.controller_port,
                log_dir=self.data_dir / "kraft",
                settings=self.settings,
            )
        )
        return config

    def _format(self, libs: Path, config: Path) -> None:
        cmd = [
            self.settings.java,
            *self._jvm_opts(),
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(config),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(
                f"kafka storage format failed ({proc.returncode}):\n"
                + _tail_text(proc.stdout + proc.stderr, 30)
            )
        log.debug("formatted %s: %s", self.data_dir / "kraft", proc.stdout.strip())

    def _write_state(self) -> None:
        assert self.pid is not None
        state = BrokerState(
            pid=self.pid,
            port=self.port,
            controller_port=self.controller_port,
            data_dir=str(self.data_dir),
            version=self.settings.version,
            started_at=_now(),
        )
        (self.data_dir / STATE_FILE).write_text(state.model_dump_json(indent=2))

    def _wait_ready(self) -> None:
        """Poll until the broker lists itself in cluster metadata (registered and unfenced).

        An open port is not enough: until the broker is unfenced, creating a topic with
        replication factor 1 fails with "only 0 broker(s) are registered".
        """
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.settings.start_timeout_s
        last_error = "port not open yet"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(
                    f"Kafka exited with code {self._proc.returncode} while starting\n{self.log_tail()}"
                )
            if _port_open(self.port):
                try:
                    if _broker_count(self.bootstrap) > 0:
                        return
                    last_error = "no broker registered in metadata yet"
                except (KafkaError, OSError) as exc:  # not serving yet: retry until the deadline
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise BrokerError(
            f"Kafka at {self.bootstrap} not ready after {self.settings.start_timeout_s:.0f}s "
            f"({last_error})\n{self.log_tail()}"
        )

    def _stop_at_exit(self) -> None:
        if self.pid is not None:
            log.warning("stopping Kafka pid %d left running at interpreter exit", self.pid)
            self.stop()


def start_local_kafka(
    data_dir: Path | None = None,
    port: int | None = None,
    *,
    settings: BrokerSettings | None = None,
    detach: bool = False,
) -> LocalKafka:
    """Start a broker and return it once it serves metadata.

    Without ``data_dir`` the broker gets a fresh temporary one (removed by ``stop()``);
    an existing ``data_dir`` keeps its topics, and its previous ports are reused when
    ``port`` is not given, because a formatted KRaft log remembers its controller address.
    """
    settings = settings or load(BrokerSettings)
    ephemeral = data_dir is None
    if data_dir is None:
        root = cache_dir() / "kafka" / "run"
        root.mkdir(parents=True, exist_ok=True)
        data_dir = Path(tempfile.mkdtemp(prefix="broker-", dir=root))
    data_dir = data_dir.resolve()
    previous = _previous_ports(data_dir)
    if previous is not None and port in (None, previous[0]):
        port, controller_port = previous
    else:
        port = port or free_port()
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
    kafka = LocalKafka(data_dir, port, controller_port, settings, ephemeral=ephemeral)
    try:
        kafka.start(detach=detach)
    except BaseException:
        if ephemeral:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return kafka


def ensure_kafka() -> tuple[str, LocalKafka | None]:
    """The external broker in ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a new local one.

    The caller owns the returned ``LocalKafka`` (``None`` for an external broker) and stops it.
    """
    external = os.environ.get(EXTERNAL_BOOTSTRAP_ENV, "").strip()
    if external:
        log.info("using external Kafka at %s", external)
        return external, None
    kafka = start_local_kafka()
    return kafka.bootstrap, kafka


def read_state(data_dir: Path) -> BrokerState | None:
    """The state file of a broker started on ``data_dir``, or None if there is none."""
    path = data_dir / STATE_FILE
    if not path.is_file():
        return None
    return BrokerState.model_validate_json(path.read_text())


def running_broker(data_dir: Path) -> BrokerState | None:
    """The state of the broker on ``data_dir`` if its process is still alive."""
    state = read_state(data_dir)
    if state is None or not _pid_is_broker(state.pid, data_dir):
        return None
    return state


def stop_broker(data_dir: Path, settings: BrokerSettings | None = None) -> bool:
    """Stop the broker recorded in ``data_dir`` (started by any process); False if none ran."""
    settings = settings or load(BrokerSettings)
    state = running_broker(data_dir)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    if state is None:
        return False
    _stop_pid(state.pid, settings.stop_timeout_s)
    return True


# ---------------------------------------------------------------------- helpers


def _previous_ports(data_dir: Path) -> tuple[int, int] | None:
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


def _broker_count(bootstrap: str) -> int:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        return len(admin.describe_cluster().get("brokers", []))
    finally:
        admin.close()


def _port_free(port: int) -> bool:
    """Bindable as the JVM binds it: SO_REUSEADDR, so TIME_WAIT left by a restart is no obstacle."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((_LOCALHOST, port))
        except OSError:
            return False
        return True


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((_LOCALHOST, port)) == 0


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; an exited child of ours is reaped, a zombie counts as gone."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: ask the kernel below
    stat = Path(f"/proc/{pid}/stat")
    try:
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass  # no /proc (or the process just went): fall back to signal 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_is_broker(pid: int, data_dir: Path) -> bool:
    """Alive, and (where /proc tells) really our broker, so a reused pid is never killed."""
    if not _pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in args and str(data_dir / "server.properties").encode() in args


def _stop_pid(
    pid: int, timeout_s: float, *, hard: bool = False, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """SIGTERM (a clean shutdown flushes logs), wait, then SIGKILL if it will not go."""

    def gone() -> bool:
        if proc is not None:
            return proc.poll() is not None
        return not _pid_alive(pid)

    if gone():
        return
    try:
        os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone():
            return
        time.sleep(0.1)
    log.warning("Kafka pid %d still alive %.0fs after SIGTERM; sending SIGKILL", pid, timeout_s)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=10)
    else:
        end = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.1)
    if not gone():
        raise BrokerError(f"Kafka pid {pid} survived SIGKILL")


def _tail_file(path: Path, lines: int) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        return _tail_text(f.read().decode(errors="replace"), lines)


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- CLI


def default_cli_data_dir() -> Path:
    return cache_dir() / "kafka" / "default"


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``learnrec kafka up|down|status|fetch``."""
    parser = subparsers.add_parser("kafka", help="run a local single-node Kafka broker (no Docker)")
    actions = parser.add_subparsers(dest="kafka_action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help=f"broker data dir (default: {default_cli_data_dir()})",
        )

    up = actions.add_parser(
        "up", help="start the broker (detached) and print its bootstrap address"
    )
    common(up)
    up.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: a free one)")
    up.set_defaults(func=_cli_up)

    down = actions.add_parser("down", help="stop the broker")
    common(down)
    down.add_argument("--wipe", action="store_true", help="also delete the data dir")
    down.set_defaults(func=_cli_down)

    status = actions.add_parser("status", help="say whether the broker runs; exit 1 if not")
    common(status)
    status.set_defaults(func=_cli_status)

    fetch = actions.add_parser("fetch", help="only fetch the broker jars into the cache")
    fetch.set_defaults(func=_cli_fetch)


def _cli_up(args: argparse.Namespace) -> int:
    data_dir = (args.data_dir or default_cli_data_dir()).resolve()
    state = running_broker(data_dir)
    if state is not None:
        print(f"already running: {state.bootstrap} (pid {state.pid}, data {data_dir})")
        return 0
    try:
        kafka = start_local_kafka(data_dir, args.port, detach=True)
    except BrokerError as exc:
        print(f"error: {exc}")
        return 1
    print(kafka.bootstrap)
    return 0


def _cli_down(args: argparse.Namespace) -> int:
    data_dir = (args.data_dir or default_cli_data_dir()).resolve()
    stopped = stop_broker(data_dir)
    print("stopped" if stopped else "not running")
    if args.wipe:
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"removed {data_dir}")
    return 0


def _cli_status(args: argparse.Namespace) -> int:
    data_dir = (args.data_dir or default_cli_data_dir()).resolve()
    state = running_broker(data_dir)
    if state is None:
        print(f"not running (data {data_dir})")
        return 1
    print(
        f"running: {state.bootstrap} (pid {state.pid}, Kafka {state.version}, since {state.started_at})"
    )
    return 0


def _cli_fetch(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        libs = fetch_jars()
    except BrokerError as exc:
        print(f"error: {exc}")
        return 1
    print(f"{libs} ({time.monotonic() - started:.1f}s)")
    return 0
