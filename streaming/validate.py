"""Pure decoding of Kafka record values into events, or a reason to dead-letter them.

No I/O here: ``decode(raw, ...)`` is a function of its inputs, so every rule
for bad input is unit-tested without a broker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import get_args

from pydantic import ValidationError

from learn_core.events import (
    INTERACTION,
    ITEM_CREATED,
    NUL_ERROR,
    SCHEMA_VERSION,
    Event,
    Interaction,
    InteractionKind,
    ItemCreated,
    JsonTooDeep,
    event_time,
    loads_bounded,
    value_in_range,
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
TOO_DEEP = "json_too_deep"
NUL_CHARACTER = "nul_character"
#: set by the interaction consumer, not by ``decode``: the id was first seen with other content
DUPLICATE_CONFLICT = "duplicate_event_id_conflict"


def _not_json_detail(raw: bytes, exc: ValueError) -> str:
    """Which of the two it is: bytes that are not UTF-8, or UTF-8 text that is not JSON.

    orjson reports invalid UTF-8 as "str is not valid UTF-8: surrogates not allowed",
    which names the wrong cause; the bytes are checked here, on the error path only.
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not valid UTF-8: byte 0x{raw[bad.start]:02x} at offset {bad.start}"
    return f"not valid JSON: {exc}"[:300]


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
        obj = loads_bounded(raw)
    except JsonTooDeep as exc:
        return Rejection(TOO_DEEP, str(exc))
    except ValueError as exc:  # orjson.JSONDecodeError included
        return Rejection(NOT_JSON, _not_json_detail(raw, exc))
    if not isinstance(obj, dict):
        return Rejection(SCHEMA, f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return Rejection(UNKNOWN_TYPE, f"unknown event type {str(kind)[:60]!r}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int:  # not bool, not 1.0: they compare equal to 1
        return Rejection(SCHEMA, f"schema_version must be an integer, got {str(version)[:20]!r}")
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


# -------------------------------------------------------------- fast path (interactions)
#
# ``decode`` costs ~15 us per record (the JSON parse, then pydantic re-parses the bytes and
# calls three Python validators), as much as kafka-python spends reading the record. The
# fast path accepts only the common shape of a *valid* interaction, checked field by field
# with the same rules as the model; anything else (every invalid record included) goes
# to ``decode``, so rejections and their reasons cannot differ. The result is built like
# ``model_validate_json`` builds it (same ``__dict__``, ``model_fields_set``);
# tests/unit/test_validate_fast.py checks equality on valid and invalid inputs.

_INTER_FIELDS = frozenset(Interaction.model_fields)
_INTER_REQUIRED = frozenset({"type", "event_id", "user_id", "item_id", "event_type", "occurred_at"})
_KINDS = frozenset(get_args(InteractionKind))
_CONTROL = re.compile(r"[\x00-\x1f]")  # the negation of the ``Id`` pattern's class
_ID_MAX = 256


def _valid_id(v: object) -> bool:
    return type(v) is str and 0 < len(v) <= _ID_MAX


def _fast_interaction(raw: bytes, limits: Limits, now: datetime) -> Interaction | None:
    """The event if ``raw`` is a plainly valid interaction, else None (undecided)."""
    if len(raw) > limits.max_record_bytes:
        return None
    try:
        obj = loads_bounded(raw)
    except ValueError:
        return None
    if type(obj) is not dict or obj.get("type") != INTERACTION:
        return None
    keys = obj.keys()
    if not (_INTER_REQUIRED <= keys and keys <= _INTER_FIELDS):
        return None
    version = obj.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        return None
    event_id, user_id, item_id = obj["event_id"], obj["user_id"], obj["item_id"]
    if not (_valid_id(event_id) and _valid_id(user_id) and _valid_id(item_id)):
        return None
    if _CONTROL.search(event_id) or _CONTROL.search(user_id) or _CONTROL.search(item_id):
        return None
    kind = obj["event_type"]
    if type(kind) is not str or kind not in _KINDS:
        return None
    value = obj.get("value")
    if value is not None:
        if type(value) is int:
            value = float(value)
        elif type(value) is not float:
            return None
        if not value_in_range(value):
            return None
    at = obj["occurred_at"]
    if type(at) is not str:
        return None
    try:
        t = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    t = t.astimezone(UTC)
    if t > now + limits.max_future_skew:
        return None
    return _build_interaction(
        {
            "schema_version": SCHEMA_VERSION,
            "type": INTERACTION,
            "event_id": event_id,
            "user_id": user_id,
            "item_id": item_id,
            "event_type": kind,
            "value": value,
            "occurred_at": t,
        },
        set(keys),
    )


def _build_interaction(values: dict[str, object], fields_set: set[str]) -> Interaction:
    # What pydantic's model_construct ends with, without its per-field Python loop
    # (which costs more than the strict validation it would replace).
    m = Interaction.__new__(Interaction)
    object.__setattr__(m, "__dict__", values)
    object.__setattr__(m, "__pydantic_fields_set__", fields_set)
    object.__setattr__(m, "__pydantic_extra__", None)
    object.__setattr__(m, "__pydantic_private__", None)
    return m


def decode_fast(
    raw: bytes | None,
    *,
    limits: Limits,
    now: datetime | None = None,
    expect: str | None = None,
) -> Event | Rejection:
    """``decode`` with a fast path for valid interactions; the same result for every input."""
    if raw is not None and (expect is None or expect == INTERACTION):
        event = _fast_interaction(raw, limits, now or datetime.now(UTC))
        if event is not None:
            return event
    return decode(raw, limits=limits, now=now, expect=expect)


def _schema_reason(exc: ValidationError) -> str:
    # An unknown interaction kind is an unknown event type, not a shape error.
    errors = exc.errors()
    for err in errors:
        if err["loc"] and err["loc"][0] == "event_type" and err["type"] == "literal_error":
            return UNKNOWN_TYPE
    if all(err["type"] == NUL_ERROR for err in errors):
        return NUL_CHARACTER
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
