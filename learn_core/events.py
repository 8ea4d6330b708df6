"""Event contracts: the JSON that producers put on Kafka and consumers accept.

Every event carries ``schema_version`` and ``type`` so that a consumer can reject
what it does not understand instead of guessing. The models are strict (no type
coercion, no unknown fields) because a silently coerced id or timestamp would
corrupt features far downstream, where nobody can trace it back.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1

ITEM_CREATED = "item-created"
INTERACTION = "interaction"

#: Interaction kinds the system knows. ``rating`` carries the rating in ``value``.
InteractionKind = Literal[
    "view", "click", "like", "add_to_cart", "purchase", "rating", "share", "dislike"
]

Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]


def _utc(value: datetime) -> datetime:
    """Reject naive timestamps: a naive time is ambiguous across producers."""
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone (e.g. '2024-01-01T00:00:00Z')")
    return value.astimezone(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION


class ItemCreated(_Event):
    """A new (or re-described) item. Only ``item_id`` and ``title`` are required."""

    type: Literal["item-created"] = ITEM_CREATED
    item_id: Id
    title: str = Field(min_length=1)
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    keywords: list[str] = Field(default_factory=list)
    attributes: dict[str, str] = Field(default_factory=dict)
    description: str | None = None
    created_at: datetime | None = None

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, v: object) -> object:
        # JSON ints are valid prices; strict mode would otherwise reject 10 vs 10.0.
        if isinstance(v, bool):
            raise ValueError("price must be a number")
        if isinstance(v, int):
            v = float(v)
        if isinstance(v, float) and (not math.isfinite(v) or v < 0):
            raise ValueError("price must be a finite, non-negative number")
        return v

    @field_validator("created_at", mode="before")
    @classmethod
    def _parse_created(cls, v: object) -> object:
        return _parse_time(v)

    @field_validator("created_at")
    @classmethod
    def _tz_created(cls, v: datetime | None) -> datetime | None:
        return None if v is None else _utc(v)

    def text_chars(self) -> int:
        """Characters of free text, for the oversize cap."""
        parts = [self.title, self.category, self.brand, self.description, *self.keywords]
        n = sum(len(p) for p in parts if p)
        return n + sum(len(k) + len(v) for k, v in self.attributes.items())


class Interaction(_Event):
    """A user acting on an item. ``value`` holds e.g. the rating for ``rating`` events."""

    type: Literal["interaction"] = INTERACTION
    event_id: Id
    user_id: Id
    item_id: Id
    event_type: InteractionKind
    value: float | None = None
    occurred_at: datetime

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("value must be a number")
        if isinstance(v, int):
            v = float(v)
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("value must be finite")
        return v

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _parse_occurred(cls, v: object) -> object:
        return _parse_time(v)

    @field_validator("occurred_at")
    @classmethod
    def _tz_occurred(cls, v: datetime) -> datetime:
        return _utc(v)


Event = ItemCreated | Interaction


def _parse_time(v: object) -> object:
    """Accept ISO-8601 strings (strict mode alone would refuse JSON strings)."""
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 timestamp: {v[:40]!r}") from exc
    return v


def entity_key(event: Event) -> str:
    """The Kafka message key: items by item id, interactions by user id.

    Keying interactions by user puts one user's events on one partition, in order,
    which is what the user-history state needs.
    """
    return event.item_id if isinstance(event, ItemCreated) else event.user_id


def event_time(event: Event) -> datetime | None:
    return event.created_at if isinstance(event, ItemCreated) else event.occurred_at


def to_json_bytes(event: Event) -> bytes:
    return event.model_dump_json(exclude_none=True).encode("utf-8")
