"""Kafka-side settings: where the broker is, topic names and input caps."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Broker and topics (env prefix ``LEARNREC_KAFKA_``; ``KAFKA_BOOTSTRAP_SERVERS`` also works)."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_KAFKA_", extra="forbid", populate_by_name=True
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
        description="retention of topics we create; -1 keeps events (replays carry old "
        "timestamps, which time-based retention would delete before they are consumed)",
    )


class LimitsSettings(BaseSettings):
    """Caps on untrusted input (env prefix ``LEARNREC_LIMITS_``)."""

    model_config = SettingsConfigDict(env_prefix="LEARNREC_LIMITS_", extra="forbid")

    max_record_bytes: int = Field(256_000, ge=1_000, description="larger records are dead-lettered")
    max_text_chars: int = Field(20_000, ge=100, description="item text (all fields) cap")
    max_future_skew_s: float = Field(
        300.0, ge=0, description="timestamps later than now+this are rejected"
    )
