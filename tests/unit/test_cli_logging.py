"""A client library's recoverable error reaches the user as one line, not a traceback."""

from __future__ import annotations

import io
import logging

from learnrec.cli import one_line_client_errors, quiet_clients
from streaming.kafka_outage import SUMMARY


def _log_exception(name: str) -> str:
    # (An earlier test's broker connection arms the process-wide outage summary, which
    # would then say "lost the connection" for this line: the fold is what is tested.)
    SUMMARY.reset()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(one_line_client_errors)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            logger.exception("%s: Error receiving network data closing socket", "<conn>")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return buf.getvalue()


def test_kafka_client_traceback_is_folded_into_one_line() -> None:
    out = _log_exception("kafka.producer.sender")  # (kafka.net.*: test_kafka_outage)
    assert "Traceback" not in out
    assert out == (
        "<conn>: Error receiving network data closing socket "
        "(ConnectionResetError: [Errno 104] Connection reset by peer)\n"
    )


def test_our_own_tracebacks_are_kept() -> None:
    out = _log_exception("streaming.consumer")
    assert "Traceback (most recent call last)" in out


def test_client_warnings_a_user_cannot_act_on_are_quiet() -> None:
    quiet_clients()
    quiet = ("kafka.consumer.subscription_state", "kafka.net.selector")
    assert not any(logging.getLogger(n).isEnabledFor(logging.WARNING) for n in quiet)
    assert logging.getLogger("kafka.cluster").isEnabledFor(logging.WARNING)  # the rest speak
    assert not logging.getLogger("kafka.cluster").isEnabledFor(logging.INFO)
