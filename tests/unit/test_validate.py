"""Every bad-input rule of the Kafka boundary, without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from learn_core.events import (
    MAX_JSON_DEPTH,
    VALUE_LIMIT,
    Interaction,
    ItemCreated,
    JsonTooDeep,
    entity_key,
    loads_bounded,
    to_json_bytes,
)
from streaming.validate import (
    FUTURE,
    NOT_JSON,
    NUL_CHARACTER,
    OVERSIZED,
    SCHEMA,
    TOO_DEEP,
    UNKNOWN_TYPE,
    UNSUPPORTED_VERSION,
    WRONG_TOPIC,
    Limits,
    Rejection,
    decode,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIM = Limits(max_record_bytes=10_000, max_text_chars=500, max_future_skew=timedelta(minutes=5))


def item(**kw: object) -> dict:
    return {"type": "item-created", "schema_version": 1, "item_id": "i1", "title": "Red shoe", **kw}


def inter(**kw: object) -> dict:
    base = {
        "type": "interaction",
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "click",
        "occurred_at": "2025-12-31T23:00:00Z",
    }
    return {**base, **kw}


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


def reason(raw: bytes | None, **kw: object) -> str:
    out = decode(raw, limits=LIM, now=NOW, **kw)
    assert isinstance(out, Rejection), out
    return out.reason


def test_valid_item_minimal_and_full() -> None:
    ev = decode(enc(item()), limits=LIM, now=NOW)
    assert isinstance(ev, ItemCreated) and ev.item_id == "i1" and ev.category is None
    full = item(
        category="shoes",
        brand="Acme",
        price=10,
        keywords=["red"],
        attributes={"size": "42"},
        description="A shoe.",
        created_at="2025-06-01T00:00:00+02:00",
    )
    ev = decode(enc(full), limits=LIM, now=NOW)
    assert isinstance(ev, ItemCreated)
    assert ev.price == 10.0 and ev.created_at == datetime(2025, 5, 31, 22, tzinfo=UTC)


def test_valid_interaction_roundtrip() -> None:
    ev = decode(enc(inter(event_type="rating", value=4)), limits=LIM, now=NOW)
    assert isinstance(ev, Interaction) and ev.value == 4.0
    again = decode(to_json_bytes(ev), limits=LIM, now=NOW)
    assert again == ev
    assert entity_key(ev) == "u1"


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"\xff\xfe garbage", b'{"type": ', None],
)
def test_not_json(raw: bytes | None) -> None:
    assert reason(raw) == NOT_JSON


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"not json", "not valid JSON: "),  # ASCII: a JSON problem, not an encoding one
        (b'{"type": ', "not valid JSON: "),
        (b"\xef\xbb\xbf{}", "not valid JSON: "),  # a BOM: valid UTF-8, refused by strict JSON
        (b"\xff\xfe garbage", "not valid UTF-8: byte 0xff at offset 0"),
        (b'{"title": "caf\xe9"}', "not valid UTF-8: byte 0xe9 at offset 14"),  # Latin-1
    ],
)
def test_not_json_detail_names_the_cause(raw: bytes, detail: str) -> None:
    out = decode(raw, limits=LIM, now=NOW)
    assert isinstance(out, Rejection) and out.reason == NOT_JSON
    assert out.detail.startswith(detail), out.detail
    assert "UTF-8 JSON" not in out.detail  # the old wording, which named both causes


@pytest.mark.parametrize(
    "obj",
    [
        [1, 2],
        item(item_id=5),  # wrong type: ids are strings
        {k: v for k, v in item().items() if k != "title"},  # missing required
        item(price="cheap"),
        item(price=-1),
        item(keywords="red"),
        item(extra_field=1),
        item(created_at="yesterday"),
        item(created_at="2025-01-01T00:00:00"),  # naive timestamp
        inter(user_id=""),
        {k: v for k, v in inter().items() if k != "occurred_at"},
        inter(value="five"),
        inter(value=True),
    ],
)
def test_schema_violations(obj: object) -> None:
    assert reason(enc(obj)) == SCHEMA


def test_unknown_types() -> None:
    assert reason(enc({"type": "item-deleted", "item_id": "x"})) == UNKNOWN_TYPE
    assert reason(enc({"item_id": "x"})) == UNKNOWN_TYPE
    assert reason(enc(inter(event_type="teleport"))) == UNKNOWN_TYPE


def test_version_and_topic() -> None:
    assert reason(enc(item(schema_version=2))) == UNSUPPORTED_VERSION
    assert reason(enc(inter()), expect="item-created") == WRONG_TOPIC


def test_oversized_bytes_and_text() -> None:
    assert reason(b"{" + b" " * 20_000 + b"}") == OVERSIZED
    assert reason(enc(item(description="x" * 600))) == OVERSIZED
    ok = decode(enc(item(description="x" * 400)), limits=LIM, now=NOW)
    assert isinstance(ok, ItemCreated)


def test_future_timestamp() -> None:
    assert reason(enc(inter(occurred_at="2026-01-01T01:00:00Z"))) == FUTURE
    ok = decode(enc(inter(occurred_at="2026-01-01T00:04:00Z")), limits=LIM, now=NOW)
    assert isinstance(ok, Interaction)
    assert reason(enc(item(created_at="2030-01-01T00:00:00Z"))) == FUTURE


def test_deep_nesting_is_dead_lettered_not_a_recursion_error() -> None:
    deep = b'{"a":' * 35_000 + b"1" + b"}" * 35_000  # 210 KB: under the size cap
    lim = Limits(max_record_bytes=256_000)
    out = decode(deep, limits=lim, now=NOW)
    assert isinstance(out, Rejection) and out.reason == TOO_DEEP, out
    out = decode(b"[" * 100_000 + b"]" * 100_000, limits=lim, now=NOW)
    assert isinstance(out, Rejection) and out.reason == TOO_DEEP
    with pytest.raises(JsonTooDeep):
        loads_bounded(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert loads_bounded(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None


@pytest.mark.parametrize("version", [True, False, 1.0, "1", None, [1]])
def test_schema_version_must_be_an_integer(version: object) -> None:
    assert reason(enc(item(schema_version=version))) == SCHEMA
    assert reason(enc(inter(schema_version=version))) == SCHEMA
    with pytest.raises(ValueError, match="integer"):
        ItemCreated.model_validate_json(enc(item(schema_version=version)))


@pytest.mark.parametrize("value", [-1e308, 1e308, 1_000_001, -1e6 - 1e-3, 2**63])
def test_values_outside_the_range_are_rejected(value: float) -> None:
    assert reason(enc(inter(event_type="rating", value=value))) == SCHEMA
    for edge in (VALUE_LIMIT, -VALUE_LIMIT, 0, 4.5):
        assert isinstance(decode(enc(inter(value=edge)), limits=LIM, now=NOW), Interaction)
    assert reason(enc(item(price=1e300))) == SCHEMA


@pytest.mark.parametrize(
    "fields",
    [
        {"title": "Red\x00shoe"},
        {"description": "\x00"},
        {"category": "a\x00"},
        {"brand": "\x00b"},
        {"keywords": ["ok", "bad\x00"]},
        {"attributes": {"size\x00": "42"}},
        {"attributes": {"size": "4\x002"}},
    ],
)
def test_nul_in_text_is_rejected_with_its_reason(fields: dict) -> None:
    assert reason(enc(item(**fields))) == NUL_CHARACTER
    # NUL plus another violation: the shape error is what a producer must fix first
    assert reason(enc(item(**fields, price="x"))) == SCHEMA
    # other control characters in text are fine (tabs, newlines in descriptions)
    assert isinstance(decode(enc(item(description="a\tb\nc")), limits=LIM, now=NOW), ItemCreated)
