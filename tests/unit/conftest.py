"""Fixtures shared by the unit tests."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from learnrec.cli import one_line_client_errors, quiet_clients
from streaming.kafka_outage import SUMMARY


@pytest.fixture
def kafka_logged() -> Iterator[io.StringIO]:
    """What the command line's handler prints of kafka-python, with its logging set-up.

    The outage summary is process-wide: it starts and ends each test unarmed, so that no
    earlier test's connection decides what this one sees.
    """
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(one_line_client_errors)
    kafka = logging.getLogger("kafka")
    level = kafka.level
    quiet_clients()
    kafka.addHandler(handler)
    SUMMARY.reset()
    try:
        yield buf
    finally:
        kafka.removeHandler(handler)
        kafka.setLevel(level)
        SUMMARY.reset()
