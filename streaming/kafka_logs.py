"""kafka-python's log lines about its own recovery from a passing state, at DEBUG.

kafka-python reports some steps of its normal operation as WARNING or ERROR. A user who
reads them takes them for a fault, and none asks anything of them. This module moves
exactly those lines to DEBUG (kept by a logging set-up that asks kafka-python for DEBUG)
and leaves every other line of the library as it is. Faults still reach the user: a
broker that does not answer at start-up is one line from ``kafka_io.reaching``, naming
``KAFKA_BOOTSTRAP_SERVERS``, and a connection lost at run time is summarised by
``streaming.kafka_outage`` (lost, still unreachable every 30 s, reachable again).
"""

from __future__ import annotations

import logging

#: Errors with which kafka-python marks the group coordinator dead when it has moved or is
#: still loading; it looks the coordinator up again. A fresh broker's first group does
#: this on every start (the offsets topic is created on first use).
_COORDINATOR_MOVED = (
    "NotCoordinatorError",
    "CoordinatorNotAvailableError",
    "CoordinatorLoadInProgressError",
)


def is_benign(record: logging.LogRecord) -> bool:
    """True for the lines of kafka-python that describe a passing state, not a fault."""
    name, msg = record.name, str(record.msg)
    if name == "kafka.cluster":
        # Between the bootstrap answer and the first connection to a broker it named
        # (every client's start): the metadata refresh backs off and retries.
        return msg.startswith("No node available for metadata refresh")
    if name == "kafka.coordinator":
        if not msg.startswith("Marking the coordinator dead"):
            return False
        args = record.args if isinstance(record.args, tuple) else ()
        return bool(args) and any(e in str(args[-1]) for e in _COORDINATOR_MOVED)
    if name == "kafka.net.transport":
        # A transport closed by its client's close() (Ctrl-C, SIGTERM) while its read or
        # write task was waking: the task finds the socket already gone (None). Nothing is
        # lost; a broker's own failure is an OSError, never this.
        exc = record.exc_info[1] if record.exc_info else None
        return isinstance(exc, AttributeError) and "'NoneType'" in str(exc)
    return False


class _ToDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not is_benign(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_FILTER = _ToDebug()
#: The loggers whose lines ``is_benign`` knows (a logger's filter sees only its own lines).
LOGGERS = ("kafka.cluster", "kafka.coordinator", "kafka.net.transport")


def quiet_benign_kafka_logs() -> None:
    """Install the filter on kafka-python's loggers; idempotent (one filter object)."""
    from streaming.kafka_outage import summarise_broker_outages

    for name in LOGGERS:
        logging.getLogger(name).addFilter(_FILTER)
    summarise_broker_outages()  # a broker lost at run time: a few lines, not dozens a second
