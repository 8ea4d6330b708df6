"""Kafka-side settings: where the broker is, topic names and input caps."""

from __future__ import annotations

import re

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: A host name or IPv4 address (``[...]`` holds an IPv6 one); what Kafka clients resolve.
_HOST = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


def parse_bootstrap(value: str) -> list[tuple[str, int]]:
    """``host:port[,host:port]`` (``[v6]:port``, an optional ``PLAINTEXT://``) as (host, port).

    Kafka's own clients require the port as well; a bad entry raises ``ValueError``
    saying which entry and why, instead of kafka-python's traceback at first use.
    """
    out = []
    for raw in value.split(","):
        entry = raw.strip()
        where = f"entry {entry!r}" if entry else "an empty entry"
        addr = re.sub(r"^[A-Za-z_]+://", "", entry)
        if addr.startswith("["):
            host, sep, port = addr[1:].partition("]:")
            ok_host = sep and host and ":" in host
        else:
            host, sep, port = addr.rpartition(":")
            ok_host = bool(_HOST.match(host))
        if not sep or not port:
            raise ValueError(f"{where} has no port; expected host:port[,host:port]")
        if not ok_host:
            raise ValueError(f"{where}: {host!r} is not a host name or address")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{where}: port {port!r} is not a number from 1 to 65535")
        out.append((host, int(port)))
    return out


class KafkaSettings(BaseSettings):
    """Broker and topics (env prefix ``LEARNREC_KAFKA_``; ``KAFKA_BOOTSTRAP_SERVERS`` also works)."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_KAFKA_", extra="forbid", populate_by_name=True, allow_inf_nan=False
    )

    bootstrap_servers: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "LEARNREC_KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="host:port[,host:port]; unset: `learnrec` commands use the broker of "
        "`learnrec kafka up` and refuse when none runs",
    )
    items_topic: str = Field(
        "learn.items",
        min_length=1,
        max_length=249,
        description="item-created events, keyed by item_id",
    )
    interactions_topic: str = Field(
        "learn.interactions",
        min_length=1,
        max_length=249,
        description="interactions, keyed by user_id",
    )
    dlq_topic: str = Field(
        "learn.dlq",
        min_length=1,
        max_length=249,
        description="dead letters: original bytes + reason headers",
    )
    partitions: int = Field(4, ge=1, le=1024, description="partitions for topics we create")
    retention_ms: int = Field(
        -1,
        ge=-1,
        le=3_153_600_000_000,  # 100 years
        description="retention of topics we create; -1 keeps events (replays carry old "
        "timestamps, which time-based retention would delete before they are consumed)",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _bootstrap(cls, v: str | None) -> str | None:
        if v is not None:
            parse_bootstrap(v)
        return v


class LimitsSettings(BaseSettings):
    """Caps on untrusted input (env prefix ``LEARNREC_LIMITS_``)."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_LIMITS_", extra="forbid", allow_inf_nan=False
    )

    max_record_bytes: int = Field(
        256_000, ge=1_000, le=100_000_000, description="larger records are dead-lettered"
    )
    max_text_chars: int = Field(
        20_000, ge=100, le=10_000_000, description="item text (all fields) cap"
    )
    max_future_skew_s: float = Field(
        300.0, ge=0, le=86_400, description="timestamps later than now+this are rejected"
    )
