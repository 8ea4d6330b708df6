"""Thin kafka-python factories with the settings this project relies on."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from learn_core.settings import ConfigError, ServiceUnavailableError, load
from streaming.settings import KafkaSettings

log = logging.getLogger(__name__)

#: How long a new client waits for a first answer from the bootstrap servers
#: (kafka-python's ``bootstrap_timeout_ms``; its default, 30 s, kept a command with a
#: wrong address waiting half a minute). A broker that runs answers in milliseconds.
BOOTSTRAP_TIMEOUT_MS = 5_000

#: kafka-python's loggers that report each failed first connection (one WARNING and two
#: ERROR lines per retry); ``reaching`` says it once instead.
_BOOTSTRAP_LOGGERS = ("kafka.net.manager", "kafka.net.connection")
#: Clients being built right now (several threads may build at once).
_building = 0
_building_lock = threading.Lock()


def _not_bootstrap(record: logging.LogRecord) -> bool:
    if not _building:
        return True
    text = record.getMessage().lower()
    return "bootstrap" not in text and not text.startswith("connection failed")


@contextmanager
def reaching(bootstrap: str) -> Iterator[None]:
    """Around a client's construction: no broker answering is one line naming the setting.

    While it runs, kafka-python's per-retry lines about the bootstrap connection are
    dropped (debug logging keeps them): either it succeeds or the error says it all.
    """
    from kafka.errors import KafkaTimeoutError

    from streaming.kafka_logs import quiet_benign_kafka_logs

    global _building
    quiet_benign_kafka_logs()  # this client's passing states at DEBUG, for its whole life
    quiet = not logging.getLogger().isEnabledFor(logging.DEBUG)
    if quiet:
        with _building_lock:
            _building += 1
            for name in _BOOTSTRAP_LOGGERS:  # a filter is added once, however often
                logging.getLogger(name).addFilter(_not_bootstrap)
    try:
        yield
    except KafkaTimeoutError as exc:
        raise ServiceUnavailableError(
            f"no Kafka broker answered at {bootstrap} within "
            f"{BOOTSTRAP_TIMEOUT_MS / 1000:.0f}s ({exc}); check KAFKA_BOOTSTRAP_SERVERS "
            "(unset: the broker of `learnrec kafka up`)"
        ) from None
    finally:
        if quiet:
            with _building_lock:
                _building -= 1


#: How a command finds its broker when no bootstrap is configured. Unset in a production
#: process, which must name its brokers; the ``learnrec`` command line installs the
#: development stack's lookup of the broker that ``learnrec kafka up`` started. The
#: stages never import the development stack themselves.
_bootstrap_fallback: Callable[[], str] | None = None


def set_bootstrap_fallback(lookup: Callable[[], str] | None) -> None:
    """Install (or, with None, remove) the lookup used when no bootstrap is configured."""
    global _bootstrap_fallback
    _bootstrap_fallback = lookup


def resolve_bootstrap(settings: KafkaSettings | None = None) -> str:
    """The configured bootstrap servers, else the installed fallback's; never a new broker."""
    s = settings or load(KafkaSettings)
    if s.bootstrap_servers:
        return s.bootstrap_servers
    if _bootstrap_fallback is not None:
        return _bootstrap_fallback()
    raise ConfigError(
        "KAFKA_BOOTSTRAP_SERVERS is not set; set it to the brokers' host:port list "
        "(on a laptop, start one with `learnrec kafka up`)"
    )


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    """A producer that waits for all in-sync replicas: accepted events are not lost."""
    from kafka import KafkaProducer

    cfg: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        retries=10,
        max_in_flight_requests_per_connection=1,  # keeps per-key order through retries
        batch_size=256 * 1024,
        compression_type=None,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
    )
    cfg.update(overrides)
    with reaching(bootstrap):
        return KafkaProducer(**cfg)


def make_consumer(
    bootstrap: str, topics: Sequence[str], group_id: str | None, **overrides: Any
) -> Any:
    """A group consumer with manual commits (commit-after-write)."""
    from kafka import KafkaConsumer

    cfg: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=50,
        session_timeout_ms=30_000,
        max_poll_interval_ms=600_000,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
    )
    cfg.update(overrides)
    with reaching(bootstrap):
        return KafkaConsumer(*topics, **cfg)


def prepare_kafka(settings: KafkaSettings | None = None) -> tuple[KafkaSettings, str]:
    """Settings and bootstrap address for a service, with its topics created if missing."""
    k = settings or load(KafkaSettings)
    bootstrap = resolve_bootstrap(k)
    ensure_event_topics(bootstrap, k)
    return k, bootstrap


def ensure_event_topics(bootstrap: str, settings: KafkaSettings) -> None:
    """Create the event topics (keyed, several partitions) and the dead-letter topic if missing."""
    from streaming.admin import create_topics

    configs = {"retention.ms": str(settings.retention_ms)}
    create_topics(
        bootstrap,
        [settings.items_topic, settings.interactions_topic],
        partitions=settings.partitions,
        configs=configs,
    )
    create_topics(bootstrap, [settings.dlq_topic], partitions=1, configs=configs)


def await_partitions(consumer: Any, topic: str, timeout_s: float = 15.0) -> None:
    """Fetch the topic's partitions before the first poll joins the group.

    Otherwise a group that forms right after the topic is created can be assigned
    nothing ("No partition metadata for topic") and sit idle until the next rebalance.
    """
    deadline = time.monotonic() + timeout_s
    while not consumer.partitions_for_topic(topic):
        if time.monotonic() > deadline:
            log.warning("no partition metadata for %s after %.0fs", topic, timeout_s)
            return
        time.sleep(0.2)


def committed_offsets(consumer: Any, topic: str) -> dict[int, int]:
    """The group's committed offset of every partition of ``topic`` (0: none yet); works
    before the group has assigned this consumer anything."""
    from kafka import TopicPartition

    parts = consumer.partitions_for_topic(topic) or set()
    return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in sorted(parts)}


def consumer_lag(consumer: Any) -> int:
    """Records between the committed position and the log end, over owned partitions."""
    parts = consumer.assignment()
    if not parts:
        return 0
    ends = consumer.end_offsets(list(parts))
    return int(sum(max(0, ends[tp] - consumer.position(tp)) for tp in parts))
