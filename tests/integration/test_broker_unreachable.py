"""An unreachable broker fails a command within 10 s, naming KAFKA_BOOTSTRAP_SERVERS.

No broker is needed: a closed port on loopback refuses every connection, as a wrong
address or a stopped broker does. kafka-python's own default waited 30 s and ended in
a ``KafkaTimeoutError`` traceback. The command and each kind of client try at once, in
threads, so that the whole file takes about one timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from learn_core.settings import ServiceUnavailableError
from streaming.admin import admin_client
from streaming.kafka_io import make_consumer, make_producer
from tests.cli_child import run_learnrec
from tests.integration.test_store_down import closed_port


def _admin(bootstrap: str) -> None:
    with admin_client(bootstrap):
        pass


def _refusal(make: Callable[[str], object], bootstrap: str) -> tuple[float, str]:
    t0 = time.monotonic()
    try:
        make(bootstrap)
    except ServiceUnavailableError as exc:
        return time.monotonic() - t0, str(exc)
    raise AssertionError(f"{make} reached a broker at {bootstrap}")


def test_unreachable_broker_is_one_line_within_10s(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "item_created", "item_id": "i1", "title": "t"}\n')
    makers = [_admin, make_producer, lambda b: make_consumer(b, ["t"], "g")]
    with ThreadPoolExecutor(len(makers) + 1) as pool:
        t0 = time.monotonic()
        child = pool.submit(
            run_learnrec, "produce", str(events), KAFKA_BOOTSTRAP_SERVERS=bootstrap, timeout=30
        )
        clients = [pool.submit(_refusal, make, bootstrap) for make in makers]
        for took, message in (c.result() for c in clients):
            assert took < 10, f"{took:.1f}s: {message}"
            assert "KAFKA_BOOTSTRAP_SERVERS" in message and bootstrap in message
        out = child.result()
        took = time.monotonic() - t0
    assert out.returncode == 2, out.stderr[-3000:]
    assert took < 10, f"{took:.1f}s"
    assert out.stderr.startswith(f"cannot start: no Kafka broker answered at {bootstrap}")
    assert "KAFKA_BOOTSTRAP_SERVERS" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
