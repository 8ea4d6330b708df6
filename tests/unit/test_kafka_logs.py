"""kafka-python's lines about a passing state are DEBUG; its other warnings and errors speak."""

from __future__ import annotations

import io
import logging

from kafka.errors import KafkaConnectionError, NotCoordinatorError


def _closed_socket_read(name: str) -> None:
    # What kafka.net.transport's read task logs when close() took its socket away.
    sock = None
    try:
        sock.recv(4096)  # type: ignore[attr-defined]
    except BaseException:
        logging.getLogger(name).exception(
            "%s: Error receiving network data closing socket", "<KafkaTransport node=1>"
        )


def test_passing_states_are_not_shown(kafka_logged: io.StringIO) -> None:
    # The exact calls of kafka-python 3.0 (cluster.py, coordinator/base.py, net/transport.py).
    logging.getLogger("kafka.cluster").warning(
        "No node available for metadata refresh - backoff/retry"
    )
    logging.getLogger("kafka.coordinator").warning(
        "Marking the coordinator dead (node %s) for group %s: %s.",
        "coordinator-1",
        "learn-item-consumer",
        NotCoordinatorError(),
    )
    _closed_socket_read("kafka.net.transport")
    assert kafka_logged.getvalue() == ""


def test_faults_still_speak(kafka_logged: io.StringIO) -> None:
    coordinator = logging.getLogger("kafka.coordinator")
    coordinator.warning(
        "Marking the coordinator dead (node %s) for group %s: %s.", 1, "g", "Node Disconnected"
    )
    coordinator.error("Group Coordinator lookup for group %s failed: %s", "g", "boom")
    logging.getLogger("kafka.cluster").error("Topic %s not found in cluster metadata", "t")
    logging.getLogger("kafka.net.manager").error("Connection failed: %s", KafkaConnectionError())
    transport = logging.getLogger("kafka.net.transport")
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError:
        transport.exception("%s: Error receiving network data closing socket", "<conn>")
    _closed_socket_read("kafka.net.other")  # the same error elsewhere is not assumed benign
    lines = kafka_logged.getvalue().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [
        "WARNING kafka.coordinator",
        "ERROR kafka.coordinator",
        "ERROR kafka.cluster",
        "ERROR kafka.net.manager",  # before any connection: no outage to summarise
        "ERROR kafka.net.transport",
        "ERROR kafka.net.other",
    ]
    assert "Node Disconnected" in lines[0] and "ConnectionResetError" in lines[4]


def test_debug_logging_keeps_them_at_debug(kafka_logged: io.StringIO) -> None:
    logging.getLogger("kafka").setLevel(logging.DEBUG)
    logging.getLogger("kafka.cluster").warning(
        "No node available for metadata refresh - backoff/retry"
    )
    assert kafka_logged.getvalue() == (
        "DEBUG kafka.cluster: No node available for metadata refresh - backoff/retry\n"
    )
