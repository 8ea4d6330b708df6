"""Event contracts: the JSON that producers put on Kafka and consumers accept.

Every event carries ``schema_version`` and ``type`` so that a consumer can reject
what it does not understand instead of guessing. The models are strict (no type
coercion, no unknown fields) because a silently coerced id or timestamp would
corrupt features far downstream, where nobody can trace it back.

Rules beyond the field types (each has a dead-letter reason in ``streaming.validate``):

- JSON is parsed only by ``loads_bounded``: orjson (no Python recursion) and at most
  ``MAX_JSON_DEPTH`` levels of nesting, so a 35,000-deep record is rejected
  (``json_too_deep``) instead of raising ``RecursionError`` in every consumer.
- ``schema_version`` is a JSON integer: ``true`` and ``1.0`` are rejected, not coerced.
- Numbers are finite: an interaction ``value`` lies in ``[-VALUE_LIMIT, VALUE_LIMIT]``,
  a ``price`` in ``[0, PRICE_LIMIT]``; NaN, infinities and ``-1e308`` are rejected.
- Text never contains NUL (``\x00``): it is rejected (``nul_character``), not stripped,
  because stripping would change the item's text and its embedding behind the
  producer's back, and NUL breaks C-string consumers (PostgreSQL ``text`` refuses it).
  Ids refuse every control character.
- An ``event_id`` names one interaction: the first event stored under an id wins. A
  later event with the same id and the same content (``event_fingerprint``) is a
  redelivery and changes nothing; one with other content (user, item, kind, value or
  time) is dead-lettered (``duplicate_event_id_conflict``), so the offline log and the
  online history both keep the first. The consumer remembers an id for a bounded
  retention (``streaming.event_claims``, 7 days by default), not for ever.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1

#: Deepest JSON nesting accepted (an event needs 2: ``attributes`` inside the record).
MAX_JSON_DEPTH = 16
#: Largest magnitude of an interaction ``value`` (ratings, counts, amounts).
VALUE_LIMIT = 1e6
#: Largest ``price``.
PRICE_LIMIT = 1e12
#: The pydantic error type of a NUL in text (``streaming.validate`` maps it to its reason).
NUL_ERROR = "nul_character"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

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

    @field_validator("schema_version", mode="before")
    @classmethod
    def _version_is_int(cls, v: object) -> object:
        # Literal[1] alone accepts ``true`` and ``1.0`` (they compare equal to 1).
        if type(v) is not int:
            raise ValueError("schema_version must be an integer")
        return v


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
        if isinstance(v, float) and not (0 <= v <= PRICE_LIMIT):  # NaN fails too
            raise ValueError(f"price must be a number in [0, {PRICE_LIMIT:g}]")
        return v

    @field_validator("title", "category", "brand", "description", "keywords", "attributes")
    @classmethod
    def _no_nul(cls, v: object) -> object:
        if v is not None and _has_nul(v):
            raise PydanticCustomError(NUL_ERROR, "text must not contain NUL characters")
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
        if isinstance(v, float) and not value_in_range(v):
            raise ValueError(
                f"value must be a finite number in [-{VALUE_LIMIT:g}, {VALUE_LIMIT:g}]"
            )
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


def value_in_range(v: float) -> bool:
    """The rule for an interaction ``value`` (shared with the fast decode path)."""
    return math.isfinite(v) and -VALUE_LIMIT <= v <= VALUE_LIMIT


def _has_nul(v: object) -> bool:
    if isinstance(v, str):
        return "\x00" in v
    if isinstance(v, list):
        return any("\x00" in x for x in v)
    if isinstance(v, dict):
        return any("\x00" in k or "\x00" in x for k, x in v.items())
    return False


_CONTAINERS = frozenset((dict, list))


class JsonTooDeep(ValueError):
    """A JSON document nested deeper than allowed."""


def loads_bounded(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> object:
    """Parse JSON without Python recursion and refuse nesting deeper than ``max_depth``.

    The one JSON decoder for untrusted records (both consumer decode paths, ``produce``):
    ``json.loads`` recurses per level and a deep record raises ``RecursionError``.
    orjson parses iteratively; the depth walk below is iterative too. Raises
    ``JsonTooDeep``, or another ``ValueError`` for invalid JSON (strict JSON only:
    ``NaN``, ``Infinity``, lone surrogates and a BOM are errors).
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson >= 3.9 stops at a depth limit of its own (1,024 levels) before the walk
        # below sees the document: still too deep, not malformed.
        if "depth limit" in str(exc) or "recursion limit" in str(exc):
            raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels") from None
        raise
    if type(obj) is dict and _CONTAINERS.isdisjoint(map(type, obj.values())):
        return obj  # the common flat record, without the walk
    if isinstance(obj, dict | list):
        stack: list[tuple[object, int]] = [(obj, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > max_depth:
                raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return obj


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


def event_fingerprint(event: Interaction) -> str:
    """What makes two interactions with one ``event_id`` the same event (a short digest)."""
    t = str((event.occurred_at - _EPOCH) // _MICROSECOND)  # exact, unlike a float
    parts = (event.user_id, event.item_id, event.event_type, repr(event.value), t)
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


def to_json_bytes(event: Event) -> bytes:
    return event.model_dump_json(exclude_none=True).encode("utf-8")
