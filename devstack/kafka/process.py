"""A local single-node Apache Kafka (KRaft) broker process, run from the cached jars.

Each broker gets a data directory holding its ``server.properties``, a log4j2 config (the
broker logs to ``broker.log`` there, not to the terminal), its KRaft storage and a
``learnrec-kafka.json`` state file that ``learnrec kafka status|down`` and the commands
that look for the broker of ``learnrec kafka up`` read.

Python API::

    kafka = start_local_kafka()          # fresh temporary data dir, free ports
    produce_to(kafka.bootstrap)          # "127.0.0.1:<port>"
    kafka.restart()                      # same data and ports: for fault tests
    kafka.stop()                         # stops, and removes a temporary data dir

    with owned_kafka() as bootstrap:     # KAFKA_BOOTSTRAP_SERVERS, else a throwaway broker
        ...                              # the block owns it; it is gone afterwards
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.kafka.config import (
    BROKER_LOG,
    EXTERNAL_BOOTSTRAP_ENV,
    LOCALHOST,
    STATE_FILE,
    STDOUT_LOG,
    BrokerError,
    BrokerSettings,
    BrokerState,
    new_cluster_id,
    previous_ports,
    read_state,
    render_log4j2,
    render_server_properties,
)
from devstack.kafka.fetch import fetch_jars
from devstack.kafka.system import (
    free_port,
    now,
    pid_is_broker,
    port_free,
    port_open,
    stop_pid,
    tail_file,
    tail_text,
)
from learn_core.settings import cache_dir, load

log = logging.getLogger(__name__)


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
        return f"{LOCALHOST}:{self.port}"

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
        busy = [p for p in (self.port, self.controller_port) if not port_free(p)]
        if busy:
            raise BrokerError(f"port(s) {busy} on {LOCALHOST} already in use; pick another --port")
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
        stop_pid(self.pid, self.settings.stop_timeout_s, hard=hard, proc=self._proc)
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
        return pid_is_broker(self.pid, self.data_dir)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the broker log and of the JVM's stdout, for error messages."""
        parts = []
        for name in (BROKER_LOG, STDOUT_LOG):
            path = self.data_dir / name
            if path.is_file():
                parts.append(f"--- {path} (last {lines} lines)\n{tail_file(path, lines)}")
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
                + tail_text(proc.stdout + proc.stderr, 30)
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
            started_at=now(),
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
            if port_open(self.port):
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
    previous = previous_ports(data_dir)
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


@contextmanager
def owned_kafka(settings: BrokerSettings | None = None) -> Iterator[str]:
    """The external broker in ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a throwaway local one.

    For callers that own their broker (the demo, benchmarks): a local broker started here
    is stopped, and its temporary data removed, when the block ends.
    """
    external = os.environ.get(EXTERNAL_BOOTSTRAP_ENV, "").strip()
    if external:
        log.info("using external Kafka at %s", external)
        yield external
        return
    kafka = start_local_kafka(settings=settings)
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()


def running_broker(data_dir: Path) -> BrokerState | None:
    """The state of the broker on ``data_dir`` if its process is still alive."""
    state = read_state(data_dir)
    if state is None or not pid_is_broker(state.pid, data_dir):
        return None
    return state


def stop_broker(data_dir: Path, settings: BrokerSettings | None = None) -> bool:
    """Stop the broker recorded in ``data_dir`` (started by any process); False if none ran."""
    settings = settings or load(BrokerSettings)
    state = running_broker(data_dir)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    if state is None:
        return False
    stop_pid(state.pid, settings.stop_timeout_s)
    return True


def _broker_count(bootstrap: str) -> int:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        return len(admin.describe_cluster().get("brokers", []))
    finally:
        admin.close()
