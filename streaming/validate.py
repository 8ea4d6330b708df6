"""Pure decoding of Kafka record values into events, or a reason to dead-letter them.

No I/O here: ``decode(raw, ...)`` is a function of its inputs, so every rule
for bad input is unit-tested without a broker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from learn_core.events import (
    INTERACTION,
    ITEM_CREATED,
    SCHEMA_VERSION,
    Event,
    Interaction,
    ItemCreated,
    event_time,
)

_MODELS: dict[str, type[ItemCreated] | type[Interaction]] = {
    ITEM_CREATED: ItemCreated,
    INTERACTION: Interaction,
}


@dataclass(frozen=True)
class Limits:
    max_record_bytes: int = 256_000
    max_text_chars: int = 20_000
    max_future_skew: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class Rejection:
    """Why a record was not processed. ``reason`` is a stable code, ``detail`` is for humans."""

    reason: str
    detail: str


# Stable reason codes (also the dead-letter header values).
NOT_JSON = "not_json"
SCHEMA = "schema_violation"
UNKNOWN_TYPE = "unknown_event_type"
UNSUPPORTED_VERSION = "unsupported_schema_version"
OVERSIZED = "oversized"
FUTURE = "future_timestamp"
WRONG_TOPIC = "wrong_topic"


def decode(
    raw: bytes | None,
    *,
    limits: Limits,
    now: datetime | None = None,
    expect: str | None = None,
) -> Event | Rejection:
    """Parse and validate one record value.

    ``expect`` names the event type a topic carries; another type is rejected
    rather than silently processed by the wrong consumer.
    """
    if raw is None:
        return Rejection(NOT_JSON, "record has no value (tombstone)")
    if len(raw) > limits.max_record_bytes:
        return Rejection(OVERSIZED, f"record is {len(raw)} bytes > cap {limits.max_record_bytes}")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        return Rejection(NOT_JSON, f"not valid UTF-8 JSON: {exc}"[:300])
    if not isinstance(obj, dict):
        return Rejection(SCHEMA, f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return Rejection(UNKNOWN_TYPE, f"unknown event type {str(kind)[:60]!r}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        return Rejection(
            UNSUPPORTED_VERSION, f"schema_version {str(version)[:20]!r} is not {SCHEMA_VERSION}"
        )
    if expect is not None and kind != expect:
        return Rejection(WRONG_TOPIC, f"{kind!r} event on a topic for {expect!r}")
    try:
        event = model.model_validate_json(raw)
    except ValidationError as exc:
        return Rejection(_schema_reason(exc), _summarise(exc))
    if isinstance(event, ItemCreated) and event.text_chars() > limits.max_text_chars:
        return Rejection(
            OVERSIZED, f"item text is {event.text_chars()} chars > cap {limits.max_text_chars}"
        )
    ts = event_time(event)
    now = now or datetime.now(UTC)
    if ts is not None and ts > now + limits.max_future_skew:
        return Rejection(
            FUTURE, f"timestamp {ts.isoformat()} is after now + {limits.max_future_skew}"
        )
    return event


def _schema_reason(exc: ValidationError) -> str:
    # An unknown interaction kind is an unknown event type, not a shape error.
    for err in exc.errors():
        if err["loc"] and err["loc"][0] == "event_type" and err["type"] == "literal_error":
            return UNKNOWN_TYPE
    return SCHEMA


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)[:500]


def limits_from_env() -> Limits:
    from learn_core.settings import load
    from streaming.settings import LimitsSettings

    s = load(LimitsSettings)
    return Limits(s.max_record_bytes, s.max_text_chars, timedelta(seconds=s.max_future_skew_s))
