"""Settings of the interaction consumer (``streaming.interaction_consumer``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streaming.consumer import ConsumerSettings
from streaming.event_claims import DEFAULT_RETENTION_DAYS


class InteractionConsumerSettings(ConsumerSettings):
    """Interaction consumer (env prefix ``LEARNREC_INTERACTION_CONSUMER_``)."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_INTERACTION_CONSUMER_", extra="forbid", allow_inf_nan=False
    )

    group_id: str = Field("learn-interaction-consumer", min_length=1)
    max_batch: int = Field(
        10_000, ge=1, le=100_000, description="records per micro-batch (caps a backlog's batch)"
    )
    history_len: int = Field(
        50,
        ge=1,
        le=1024,
        description="H: items kept per user; the model's own window (its serving contract) "
        "is embedded, and a smaller H than that is refused at start-up",
    )
    content_cache_entries: int = Field(
        200_000, ge=1, le=100_000_000, description="LRU of content vectors"
    )
    reload_check_s: float = Field(5.0, ge=0, le=3600, description="how often to ask the registry")
    torch_threads: int = Field(1, ge=1, le=64, description="intra-op threads of the forward")
    lag_every_s: float = Field(5.0, gt=0, le=3600, description="period of the consumer-lag gauge")
    held_recheck_s: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="when idle, how often held users are re-checked for content",
    )
    held_max_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="longest a missing item holds its user: then the user is embedded "
        "without it, and again with it when it arrives (0: at once)",
    )
    held_max_users: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="users embedded without a missing item that stay on the re-check "
        "list; beyond it those skipped longest ago wait for their next event",
    )
    store_check_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="how often the online store's high-water marks are compared with what "
        "was committed, on quiet partitions too (every batch checks its own): a store that "
        "went back is rebuilt from the offline log",
    )
    pipeline: bool = Field(
        True,
        description="poll the next batch while the handler writes this one (commit after write)",
    )
    event_id_retention_days: float = Field(
        DEFAULT_RETENTION_DAYS,
        gt=0,
        le=3650,
        description="how long an event_id's first content is kept at least: a reuse "
        "with other content within this span is dead-lettered; claims are dropped after "
        "it (SQLite: up to twice it)",
    )
