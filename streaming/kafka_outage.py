"""A lost broker as a few lines, not kafka-python's dozens per second.

When the broker goes away at run time, kafka-python logs every failed reconnection and
metadata refresh at ERROR: about three lines per attempt, dozens per second, for as long
as the outage lasts. Each says the same thing, and the one a user needs ("is it back?")
is never said. Here the process says it once at WARNING, again every ``every_s`` while
it lasts (with the count and the setting to check), and once at INFO when a connection
completes again. Each original line stays at DEBUG for those who ask for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_CONNECTION = "kafka.net.connection"
#: Loggers whose lines report a connection that failed or was lost.
LOGGERS = (
    "kafka.net.transport",
    "kafka.net.connection",
    "kafka.net.manager",
    "kafka.cluster",
    "kafka.coordinator",
)
_FAILURE_MARKS = (
    "socket disconnected",
    "KafkaConnectionError",
    "Connection lost",
    "Connection failed",
    "Request timed out",
    "Metadata refresh: failed",
    "Metadata refresh loop error",
)


@dataclass
class OutageSummary:
    """What to say about connection failures, given when they happen (pure; clock injected)."""

    every_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    since: float | None = None
    errors: int = 0
    #: Failures before a first connection are a start-up error, said by
    #: ``kafka_io.reaching`` (one line naming the setting), not an outage.
    ever_connected: bool = False
    _last_said: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reset(self) -> None:
        """Forget every connection seen (a process-wide summary shared by tests)."""
        with self._lock:
            self.since, self.errors, self.ever_connected, self._last_said = None, 0, False, 0.0

    def failed(self, detail: str) -> str | None:
        """A failed or lost connection: the line to log, or None to keep quiet."""
        with self._lock:
            now = self.clock()
            if self.since is None:
                self.since, self._last_said, self.errors = now, now, 1
                return (
                    f"lost the connection to the Kafka broker ({detail}); the client "
                    f"reconnects by itself and this says how it goes every {self.every_s:.0f} s "
                    "(each failed attempt is logged at DEBUG)"
                )
            self.errors += 1
            if now - self._last_said < self.every_s:
                return None
            self._last_said = now
            return (
                f"Kafka broker still unreachable after {now - self.since:.0f} s "
                f"({self.errors} connection errors, the last: {detail}); check the broker "
                "and KAFKA_BOOTSTRAP_SERVERS"
            )

    def connected(self) -> str | None:
        """A connection completed: the recovery line after an outage, else None."""
        with self._lock:
            self.ever_connected = True
            if self.since is None:
                return None
            gone = self.clock() - self.since
            msg = (
                f"Kafka broker reachable again after {gone:.1f} s "
                f"({self.errors} connection errors while it was away)"
            )
            self.since, self.errors = None, 0
            return msg


def _exc(record: logging.LogRecord) -> BaseException | None:
    return record.exc_info[1] if record.exc_info else None


def is_failure(record: logging.LogRecord) -> bool:
    """A line about a connection that failed or was lost (by its text or its exception)."""
    if record.levelno < logging.WARNING:
        return False
    return isinstance(_exc(record), ConnectionError) or any(
        m in record.getMessage() for m in _FAILURE_MARKS
    )


def _detail(record: logging.LogRecord) -> str:
    msg = record.getMessage()
    msg = msg.split(": ", 1)[1] if msg.startswith("<") and ": " in msg else msg
    exc = _exc(record)
    return msg if exc is None else f"{msg}: {type(exc).__name__}: {exc}"


class _Summarise(logging.Filter):
    def __init__(self, summary: OutageSummary) -> None:
        super().__init__()
        self.summary = summary
        #: Below this level a line is shown only if it is ours (INFO is enabled on
        #: kafka.net.connection solely to see "Connected").
        self.shown_from = logging.WARNING

    def _say(self, record: logging.LogRecord, level: int, msg: str) -> bool:
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.name, record.msg, record.args = __name__, msg, None
        record.exc_info = record.exc_text = None
        return True

    def _shown(self, record: logging.LogRecord, level: int) -> bool:
        if record.name == _CONNECTION:
            return level >= self.shown_from
        return logging.getLogger(record.name).isEnabledFor(level)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            if record.name == _CONNECTION and str(record.msg).endswith(": Connected"):
                # (a first connection only arms the summary: nothing to say)
                said = self.summary.connected()
                if said is not None:
                    return self._say(record, logging.INFO, said)
            return self._shown(record, record.levelno)
        if not self.summary.ever_connected or not is_failure(record):
            return True
        said = self.summary.failed(_detail(record))
        if said is not None:
            return self._say(record, logging.WARNING, said)
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self._shown(record, logging.DEBUG)


SUMMARY = OutageSummary()
_FILTER = _Summarise(SUMMARY)


def summarise_broker_outages() -> None:
    """Install the summary on kafka-python's connection loggers; idempotent.

    kafka.net.connection is opened to INFO (where its level was higher) so that the
    "Connected" line that ends an outage reaches the filter; its other INFO lines stay
    hidden as before.
    """
    conn = logging.getLogger(_CONNECTION)
    level = conn.getEffectiveLevel()
    if _FILTER not in conn.filters:
        _FILTER.shown_from = level
        if level > logging.INFO:
            conn.setLevel(logging.INFO)
    # Every kafka-python logger that exists by now (a client's modules are imported when
    # it is built, and each build calls this again): the fetcher, the producer's sender and
    # others report the same lost connection in their own words.
    names = {n for n in logging.root.manager.loggerDict if n.startswith("kafka.")}
    for name in sorted(names | set(LOGGERS)):
        logging.getLogger(name).addFilter(_FILTER)
