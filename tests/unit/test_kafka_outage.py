"""A broker lost at run time is three kinds of line (lost, still unreachable, back), not
kafka-python's dozens per second; every other line of the library still speaks."""

from __future__ import annotations

import io
import logging

from streaming.kafka_outage import OutageSummary


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_summary_says_lost_once_then_every_period_then_back() -> None:
    clock = Clock()
    s = OutageSummary(every_s=30.0, clock=clock)
    assert s.connected() is None  # a first connection is no recovery
    first = s.failed("socket disconnected")
    assert first is not None and first.startswith("lost the connection to the Kafka broker")
    for _ in range(40):
        clock.t += 0.5
        assert s.failed("Connection failed: KafkaConnectionError: 111 ECONNREFUSED") is None
    clock.t += 10.5
    later = s.failed("Connection failed: KafkaConnectionError: 111 ECONNREFUSED")
    assert later is not None
    assert "still unreachable after 30 s (42 connection errors" in later
    assert "KAFKA_BOOTSTRAP_SERVERS" in later
    clock.t += 4.0
    back = s.connected()
    assert (
        back == "Kafka broker reachable again after 34.5 s (42 connection errors while it was away)"
    )
    assert s.connected() is None
    again = s.failed("socket disconnected")
    assert again is not None and again.startswith("lost the connection")  # a new outage


def test_an_outage_through_kafka_pythons_own_calls(kafka_logged: io.StringIO) -> None:
    # The exact calls of kafka-python 3.0 (net/transport.py, net/connection.py,
    # net/manager.py, cluster.py, coordinator/base.py) while the broker is down.
    transport = logging.getLogger("kafka.net.transport")
    connection = logging.getLogger("kafka.net.connection")
    manager = logging.getLogger("kafka.net.manager")
    cluster = logging.getLogger("kafka.cluster")
    coordinator = logging.getLogger("kafka.coordinator")
    conn = "<KafkaConnection node_id=1 broker_version=(4, 3) (disconnected)>"
    connection.info("%s: Connected", conn)  # the client's first connection: nothing said
    transport.error("%s: socket disconnected", "<KafkaTCPTransport [127.0.0.1:9092<-5726]>")
    for _ in range(30):
        manager.error("Connection failed: %s", "KafkaConnectionError: 111 ECONNREFUSED")
        connection.error("%s: Connection lost: %s", conn, "KafkaConnectionError: 111 ECONNREFUSED")
        cluster.error("Metadata refresh: failed %s", "KafkaConnectionError: 111 ECONNREFUSED")
        coordinator.error(
            "Error sending %s to node %s [%s]",
            "FindCoordinatorRequest",
            1,
            "KafkaConnectionError: 111 ECONNREFUSED",
        )
    connection.info("%s: Broker version identified as %s", conn, "4.3")  # hidden as before
    connection.info("%s: Connected", conn)
    connection.info("%s: Connected", conn)  # the second connection of a recovery: quiet
    cluster.error("Topic %s not found in cluster metadata", "learn.items")  # not an outage

    lines = kafka_logged.getvalue().splitlines()
    assert lines[0].startswith(
        "WARNING streaming.kafka_outage: lost the connection to the Kafka broker "
        "(socket disconnected)"
    )
    assert lines[1].startswith(
        "INFO streaming.kafka_outage: Kafka broker reachable again after "
    ) and lines[1].endswith("(121 connection errors while it was away)")
    assert lines[2] == "ERROR kafka.cluster: Topic learn.items not found in cluster metadata"
    assert len(lines) == 3, lines


def test_a_reset_connection_starts_an_outage_with_its_error(kafka_logged: io.StringIO) -> None:
    logging.getLogger("kafka.net.connection").info("%s: Connected", "<conn>")
    transport = logging.getLogger("kafka.net.transport")
    for _ in range(3):
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            transport.exception("%s: Error receiving network data closing socket", "<conn>")
    lines = kafka_logged.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "WARNING streaming.kafka_outage: lost the connection to the Kafka broker (Error "
        "receiving network data closing socket: ConnectionResetError: [Errno 104] Connection "
        "reset by peer)"
    )


def test_failures_before_any_connection_are_left_to_the_start_up_check(
    kafka_logged: io.StringIO,
) -> None:
    """An unreachable broker at start-up is kafka_io.reaching's one line naming the setting;
    the summary does not call it a lost connection."""
    manager = logging.getLogger("kafka.net.manager")
    manager.error("Connection failed: %s", "KafkaConnectionError: 111 ECONNREFUSED")
    assert "lost the connection" not in kafka_logged.getvalue()
    assert kafka_logged.getvalue().startswith("ERROR kafka.net.manager: Connection failed")


def test_other_kafka_loggers_report_the_same_outage_in_their_words(
    kafka_logged: io.StringIO,
) -> None:
    fetcher = logging.getLogger("kafka.consumer.fetcher")
    from streaming.kafka_outage import summarise_broker_outages

    summarise_broker_outages()  # as each client build does, once its modules are imported
    logging.getLogger("kafka.net.connection").info("%s: Connected", "<conn>")
    for _ in range(5):
        fetcher.error("Fetch to node %s failed: %s", 1, "KafkaConnectionError: 111 ECONNREFUSED")
    lines = kafka_logged.getvalue().splitlines()
    assert len(lines) == 1 and "lost the connection" in lines[0], lines
