"""Poison pills and stops through the real broker and the real CLI (issue 11, points 2-4).

``learnrec consume-items`` runs as a child process, as an operator runs it:

- a 35,000-deep JSON record and a 1,048,500-byte record between good ones are
  dead-lettered (the big one truncated to fit), the consumer keeps running and commits
  past both;
- SIGTERM stops it with exit 0 and its summary line; it leaves its group, so a restart
  is assigned the partition at once and picks up a new record within a short
  ``--idle-exit`` (without leaving, the restart waits a 30 s session timeout and exits
  with ``consumed 0 records``);
- ``learnrec produce`` rejects the deep line and still sends the valid lines after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from learn_core.events import ItemCreated, to_json_bytes
from streaming.dead_letter import (
    H_OFFSET,
    H_REASON,
    H_SIZE,
    H_TRUNCATED,
    PRODUCER_MAX_REQUEST,
    parse_headers,
)
from streaming.kafka_io import make_consumer, make_producer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEEP = b'{"a":' * 35_000 + b"1" + b"}" * 35_000  # 210 KB, under the 256 KB record cap
BIG_SIZE = 1_048_500  # the broker (message.max.bytes 1,048,588) accepts it


def big_record() -> bytes:
    head = b'{"type":"item-created","item_id":"big","title":"'
    tail = b'"}'
    return head + b"x" * (BIG_SIZE - len(head) - len(tail)) + tail


def item(n: int) -> ItemCreated:
    return ItemCreated(item_id=f"it-{n}", title=f"Blue kettle number {n}", category="kitchen")


def cli_env(tmp_path: Path, topics: dict[str, str], bootstrap: str, group: str) -> dict[str, str]:
    """A child's environment: this checkout, the test's broker, topics and Feast dir only."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LEARNREC_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(
        PYTHONPATH=str(REPO),
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        LEARNREC_KAFKA_ITEMS_TOPIC=topics["items"],
        LEARNREC_KAFKA_INTERACTIONS_TOPIC=topics["interactions"],
        LEARNREC_KAFKA_DLQ_TOPIC=topics["dlq"],
        LEARNREC_FEAST_PROFILE="embedded",
        LEARNREC_FEAST_PROJECT=f"p_{uuid.uuid4().hex[:10]}",
        LEARNREC_FEAST_DATA_DIR=str(tmp_path / "feast"),
        LEARNREC_REGISTRY_ROOT=str(tmp_path / "registry"),
        LEARNREC_ITEM_CONSUMER_GROUP_ID=group,
        LEARNREC_ITEM_CONSUMER_DISK_CACHE="false",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


def learnrec(*args: str) -> list[str]:
    return [sys.executable, "-m", "learnrec", *args]


def committed(bootstrap: str, group: str) -> int:
    """Sum of the group's committed offsets (0 before its first commit)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offs = admin.list_group_offsets(group).get(group, {})
    except KafkaError:  # no coordinator yet: the group has not formed
        return 0
    finally:
        admin.close()
    return sum(max(o.offset, 0) for o in offs.values())


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str, proc=None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(
                f"consumer exited {proc.returncode} while waiting for {what}:\n{out}\n{err[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.5)


def read_all(bootstrap: str, topic: str) -> list:
    c = make_consumer(bootstrap, [topic], group_id=None, consumer_timeout_ms=4000)
    try:
        return list(c)
    finally:
        c.close()


@pytest.fixture
def topics(topic_factory) -> dict[str, str]:  # noqa: ANN001
    return {
        "items": topic_factory("items", partitions=1),
        "interactions": topic_factory("inter", partitions=1),
        "dlq": topic_factory("dlq", partitions=1),
    }


def test_consume_items_survives_poison_pills_and_stops_on_sigterm(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path
) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = cli_env(tmp_path, topics, kafka_bootstrap, group)
    # The producer's own 1 MiB request check counts framing generously; the broker takes it.
    producer = make_producer(kafka_bootstrap, max_request_size=2 * PRODUCER_MAX_REQUEST)
    stream = [
        (b"it-1", to_json_bytes(item(1))),
        (b"deep", DEEP),
        (b"big", big_record()),
        (b"it-2", to_json_bytes(item(2))),
    ]
    for key, value in stream:
        producer.send(topics["items"], key=key, value=value).get(timeout=30)
    assert len(stream[2][1]) == BIG_SIZE

    proc = subprocess.Popen(
        learnrec("consume-items"), env=env, cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: committed(kafka_bootstrap, group) == 4, 240, "commit past 4", proc)
        assert proc.poll() is None, "the consumer must keep running"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "consumed 4 records: 2 accepted, 2 dead-lettered" in out, (out, err[-3000:])
    assert "Traceback" not in err, err[-3000:]

    letters = {r.key: r for r in read_all(kafka_bootstrap, topics["dlq"])}
    assert set(letters) == {b"deep", b"big"}
    deep, big = parse_headers(letters[b"deep"].headers), parse_headers(letters[b"big"].headers)
    assert deep[H_REASON] == "json_too_deep" and deep[H_TRUNCATED] == "false"
    assert letters[b"deep"].value == DEEP
    assert big[H_REASON] == "oversized" and big[H_OFFSET] == "2"
    assert big[H_TRUNCATED] == "true" and big[H_SIZE] == str(BIG_SIZE)
    assert 0 < len(letters[b"big"].value) < PRODUCER_MAX_REQUEST
    assert stream[2][1].startswith(letters[b"big"].value)

    # Restart: it left the group, so the partition is its own at once.
    producer.send(topics["items"], key=b"it-3", value=to_json_bytes(item(3))).get(timeout=30)
    producer.close()
    t0 = time.monotonic()
    again = subprocess.run(
        learnrec("consume-items", "--idle-exit", "8"), env=env, cwd=REPO, text=True,
        capture_output=True, timeout=240,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "consumed 1 records: 1 accepted, 0 dead-lettered" in again.stdout, (
        again.stdout,
        again.stderr[-3000:],
        time.monotonic() - t0,
    )
    assert committed(kafka_bootstrap, group) == 5

    from feature_repo.settings import FeastSettings
    from feature_repo.store import open_store
    from streaming.sinks import FeastItemSink

    handle = open_store(
        FeastSettings(
            profile="embedded",
            project=env["LEARNREC_FEAST_PROJECT"],
            data_dir=Path(env["LEARNREC_FEAST_DATA_DIR"]),
        ),
        apply=False,
    )
    try:
        got = FeastItemSink(handle).read_item_content(["it-1", "it-2", "it-3", "big"])
    finally:
        handle.close()
    assert set(got) == {"it-1", "it-2", "it-3"}


def test_produce_rejects_a_deep_line_and_sends_the_rest(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path
) -> None:
    inter = {
        "type": "interaction",
        "event_id": "e-1",
        "user_id": "u-1",
        "item_id": "it-1",
        "event_type": "click",
        "occurred_at": "2024-01-01T00:00:00Z",
    }
    lines = [
        to_json_bytes(item(1)),
        DEEP,
        json.dumps({**inter, "value": -1e308}).encode(),
        json.dumps(inter).encode(),
        to_json_bytes(item(2)),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    env = cli_env(tmp_path, topics, kafka_bootstrap, "unused")
    run = subprocess.run(
        learnrec("produce", str(path)), env=env, cwd=REPO, text=True, capture_output=True,
        timeout=180,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr[-3000:]  # some lines were rejected
    assert "sent 3 events, rejected 2" in run.stdout, (run.stdout, run.stderr[-3000:])
    assert "line 2: json_too_deep" in run.stderr and "line 3: schema_violation" in run.stderr
    assert "Traceback" not in run.stderr
    items = [
        ItemCreated.model_validate_json(r.value) for r in read_all(kafka_bootstrap, topics["items"])
    ]
    assert [i.item_id for i in items] == ["it-1", "it-2"]
    inters = read_all(kafka_bootstrap, topics["interactions"])
    assert [json.loads(r.value)["event_id"] for r in inters] == ["e-1"]
