"""Topic helpers: thin, idempotent adapters over kafka-python's admin client.

Topics are always created explicitly (the local broker has auto-creation off), so every
producer, consumer, test and benchmark goes through ``create_topics`` first. Creating a
topic that exists, or deleting one that does not, is not an error: start-up code can
call these unconditionally.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kafka import KafkaAdminClient

log = logging.getLogger(__name__)

_TOPIC_EXISTS = 36  # TOPIC_ALREADY_EXISTS
_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PART


class TopicError(RuntimeError):
    """The broker refused a topic operation for a reason other than idempotence."""


@contextmanager
def admin_client(bootstrap: str, *, timeout_ms: int = 30_000) -> Iterator[KafkaAdminClient]:
    """A short-lived admin client, closed on exit."""
    from kafka import KafkaAdminClient

    from streaming.kafka_io import BOOTSTRAP_TIMEOUT_MS, reaching

    with reaching(bootstrap):
        client = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            client_id="learnrec-admin",
        )
    try:
        yield client
    finally:
        client.close()


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    replication: int = 1,
    configs: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create topics that do not exist yet and wait until every partition has a leader.

    Returns the names actually created (existing ones are left as they are, even if their
    partition count differs: changing it would reorder keys, so that is a deliberate act).
    """
    names = list(dict.fromkeys(names))
    if not names:
        return []
    spec = {
        name: {
            "num_partitions": partitions,
            "replication_factor": replication,
            "configs": dict(configs or {}),
        }
        for name in names
    }
    timeout_ms = int(timeout_s * 1000)
    with admin_client(bootstrap) as admin:
        result = admin.create_topics(spec, timeout_ms=timeout_ms, raise_errors=False)
        created = _topics_done(result, "create_topics", ignore=_TOPIC_EXISTS)
        admin.wait_for_topics(names, timeout_ms=timeout_ms)
    if created:
        log.info("created topics %s (%d partitions, rf %d)", created, partitions, replication)
    return created


def _topics_done(result: dict, op: str, *, ignore: int) -> list[str]:
    """Names the admin ``op`` succeeded on; ``ignore`` is the harmless error (exists / unknown).

    Any other per-topic error raises ``TopicError`` naming every failed topic.
    """
    done, errors = [], []
    for topic in result.get("topics", []):
        code = topic.get("error_code", 0)
        if code == 0:
            done.append(topic["name"])
        elif code != ignore:
            errors.append(
                f"{topic['name']}: {_error_name(code)} {topic.get('error_message') or ''}"
            )
    if errors:
        raise TopicError(f"{op} failed: " + "; ".join(errors))
    return done


def delete_topics(bootstrap: str, names: Iterable[str], *, timeout_s: float = 30.0) -> list[str]:
    """Delete topics if they exist; returns the names actually deleted."""
    names = list(dict.fromkeys(names))
    if not names:
        return []
    with admin_client(bootstrap) as admin:
        result = admin.delete_topics(names, timeout_ms=int(timeout_s * 1000), raise_errors=False)
    deleted = _topics_done(result, "delete_topics", ignore=_UNKNOWN_TOPIC)
    if deleted:
        log.info("deleted topics %s", deleted)
    return deleted


def wait_for_topics(bootstrap: str, names: Iterable[str], *, timeout_s: float = 30.0) -> None:
    """Block until every named topic exists and each of its partitions has a leader."""
    with admin_client(bootstrap) as admin:
        admin.wait_for_topics(list(names), timeout_ms=int(timeout_s * 1000))


def wait_for_deletion(bootstrap: str, names: Iterable[str], *, timeout_s: float = 30.0) -> None:
    """Block until none of the named topics is listed any more (deletion is asynchronous)."""
    pending = set(names)
    deadline = time.monotonic() + timeout_s
    with admin_client(bootstrap) as admin:
        while pending & set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise TopicError(f"topics still listed after {timeout_s:.0f}s: {sorted(pending)}")
            time.sleep(0.2)


def list_topics(bootstrap: str) -> set[str]:
    """Names of the topics in the cluster, internal ones included."""
    with admin_client(bootstrap) as admin:
        return set(admin.list_topics())


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Log-end offset of each partition of ``topic`` (the offset the next record will get)."""
    from kafka import KafkaConsumer, TopicPartition

    from streaming.kafka_io import BOOTSTRAP_TIMEOUT_MS, reaching

    with reaching(bootstrap):
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            client_id="learnrec-offsets",
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TopicError(f"topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        return {tp.partition: int(offset) for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def _error_name(code: int) -> str:
    from kafka.errors import for_code

    return for_code(code).__name__
