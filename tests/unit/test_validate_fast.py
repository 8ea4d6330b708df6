"""The fast interaction decode equals the strict ``decode`` on valid and invalid input."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learn_core.events import Interaction
from streaming.validate import Limits, Rejection, _fast_interaction, decode, decode_fast

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIM = Limits(max_record_bytes=2_000, max_text_chars=500, max_future_skew=timedelta(minutes=5))
KINDS = ["view", "click", "like", "add_to_cart", "purchase", "rating", "share", "dislike"]


def inter(**kw: object) -> dict:
    base = {
        "schema_version": 1,
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


def same(raw: bytes | None, expect: str | None = "interaction") -> object:
    """Assert that both paths agree on ``raw`` and return the (shared) outcome."""
    strict = decode(raw, limits=LIM, now=NOW, expect=expect)
    fast = decode_fast(raw, limits=LIM, now=NOW, expect=expect)
    assert type(fast) is type(strict), (raw, strict, fast)
    if isinstance(strict, Rejection):
        assert fast == strict, raw
    else:
        assert fast == strict, raw
        assert fast.model_fields_set == strict.model_fields_set, raw
        assert fast.model_dump_json() == strict.model_dump_json(), raw
        if isinstance(strict, Interaction):
            assert fast.occurred_at.tzinfo == strict.occurred_at.tzinfo
            assert hash(fast) == hash(strict)
    return strict


def without(obj: dict, key: str) -> dict:
    return {k: v for k, v in obj.items() if k != key}


VALID = [
    inter(),
    without(inter(), "schema_version"),
    inter(event_type="rating", value=4),
    inter(event_type="rating", value=4.5),
    inter(value=None),
    inter(value=-0.0),
    inter(event_type="rating", value=1e6),  # the range's ends are inside
    inter(event_type="rating", value=-1_000_000),
    inter(occurred_at="2025-12-31T23:00:00.123456+02:00"),
    inter(occurred_at="2025-12-31T23:00:00.5+07:30"),
    inter(occurred_at="2026-01-01T00:04:59Z"),  # inside the future skew
    inter(occurred_at="1970-01-01T00:00:00+00:00"),
    inter(event_id="é" * 256, user_id="用户 1", item_id="i\x7f"),
    *[inter(event_type=k) for k in KINDS],
]

INVALID = [
    [1, 2],
    "interaction",
    None,
    inter(type="item-created"),
    inter(type=None),
    inter(type=["interaction"]),
    inter(schema_version=2),
    inter(schema_version="1"),
    inter(extra=1),
    *[without(inter(), k) for k in ("type", "event_id", "user_id", "item_id", "event_type")],
    without(inter(), "occurred_at"),
    *[
        inter(**{f: bad})
        for f in ("event_id", "user_id", "item_id")
        for bad in ("", "x" * 257, "a\x00b", "tab\there", "nl\n", 5, None, True, ["x"], {"a": 1})
    ],
    inter(event_type="teleport"),
    inter(event_type=3),
    inter(event_type=["click"]),
    inter(event_type=None),
    inter(value="five"),
    inter(value=True),
    inter(value=2**63),
    inter(value=-1e308),
    inter(value=1e6 + 0.5),
    inter(value=-1_000_001),
    inter(schema_version=1.0),
    inter(schema_version=True),
    inter(schema_version=False),
    inter(schema_version=[1]),
    inter(event_id="e\u0000"),
    inter(value=[1]),
    inter(occurred_at="yesterday"),
    inter(occurred_at="2025-01-01T00:00:00"),  # naive
    inter(occurred_at="2026-01-01T01:00:00Z"),  # future
    inter(occurred_at=1_700_000_000),
    inter(occurred_at=None),
]

# Not interactions, but accepted by the strict path: the fast path leaves them to it.
ODD = [
    {"type": "item-created", "item_id": "i1", "title": "Red shoe"},
    {"type": "item-created", "item_id": "i1", "title": "Red shoe", "attributes": {"a": "b"}},
]

RAW_INVALID = [
    None,
    b"",
    b"not json",
    b"\xff\xfe garbage",
    b'{"type": ',
    b"\xef\xbb\xbf" + enc(inter()),  # BOM: json.loads accepts, orjson does not
    enc(inter())[:-1] + b', "value": NaN}',
    enc(inter())[:-1] + b', "value": Infinity}',
    enc(inter())[:-1] + b', "value": 1e400}',
    enc(inter())[:-1] + b', "value": 18446744073709551616}',
    enc(inter(event_id="\ud800")),  # lone surrogate escape
    b'{"type":"interaction","event_id":"a","event_id":"b","user_id":"u","item_id":"i",'
    b'"event_type":"view","occurred_at":"2025-01-01T00:00:00Z"}',  # duplicate key: last wins
    b"{" + b" " * 3_000 + b"}",
    enc(inter(event_id="x" * 2_000)),  # oversized
    b'{"a":' * 300 + b"1" + b"}" * 300,  # deeper than MAX_JSON_DEPTH
    b"[" * 1_000 + b"]" * 1_000,
    enc(inter())[:-1] + b', "extra": ' + b"[" * 17 + b"]" * 17 + b"}",
    enc(inter())[:-1] + b', "extra": ' + b"[" * 15 + b"]" * 15 + b"}",  # shallow: other reason
    enc({"type": "item-created", "item_id": "i", "title": "a\u0000b"}),
    enc({"type": "item-created", "item_id": "i", "title": "t", "attributes": {"k\u0000": "v"}}),
]


@pytest.mark.parametrize("obj", VALID)
def test_valid_interactions_take_the_fast_path_and_equal_strict(obj: dict) -> None:
    raw = enc(obj)
    assert _fast_interaction(raw, LIM, NOW) is not None  # the fast path was taken
    assert isinstance(same(raw), Interaction)


@pytest.mark.parametrize("obj", INVALID)
def test_invalid_objects_get_the_same_rejection(obj: object) -> None:
    assert isinstance(same(enc(obj)), Rejection), obj


@pytest.mark.parametrize("obj", ODD)
def test_odd_inputs_are_left_to_the_strict_path(obj: object) -> None:
    assert _fast_interaction(enc(obj), LIM, NOW) is None
    same(enc(obj))
    same(enc(obj), expect=None)


@pytest.mark.parametrize("raw", RAW_INVALID)
def test_raw_edge_cases_agree(raw: bytes | None) -> None:
    same(raw)
    same(raw, expect=None)


def test_other_topics_and_no_expectation_agree() -> None:
    for obj in [inter(), {"type": "item-created", "item_id": "i1", "title": "t"}]:
        for expect in (None, "interaction", "item-created"):
            same(enc(obj), expect=expect)


def test_random_mutations_agree() -> None:
    """Byte-level fuzzing of valid records: both paths decide the same, always."""
    rng = random.Random(7)
    seeds = [enc(o) for o in VALID]
    alphabet = b'{}[]",:0123456789.eE+-Ztrufalsn \\\x00\x1fx\xc3\xa9'
    accepted = rejected = 0
    for _ in range(4_000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(raw))
            op = rng.random()
            if op < 0.4:
                raw[pos] = rng.choice(alphabet)
            elif op < 0.7:
                del raw[pos]
            else:
                raw.insert(pos, rng.choice(alphabet))
        out = same(bytes(raw))
        accepted += isinstance(out, Interaction)
        rejected += isinstance(out, Rejection)
    assert accepted > 100 and rejected > 100  # both branches were exercised


# ------------------------------------------------------------------ property-based

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "\x00", "a\x00", "2025-12-31T23:00:00Z", "2025-12-31T23:00:00"])
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = [*Interaction.model_fields, "extra"]


@st.composite
def _mutated_interaction(draw: st.DrawFn) -> dict:
    obj = inter(
        event_type=draw(st.sampled_from(KINDS)),
        value=draw(st.none() | st.floats(-2e6, 2e6) | st.integers(-(2**64), 2**64)),
    )
    for key in draw(st.lists(st.sampled_from(_FIELDS), max_size=3)):
        if draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = draw(_json)
    return obj


@settings(max_examples=1_500, deadline=None, database=None, derandomize=True)
@given(_mutated_interaction())
def test_generated_interactions_agree(obj: dict) -> None:
    """Hypothesis-generated near-valid interactions: both paths decide the same."""
    same(json.dumps(obj).encode())


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.integers(0, 40), st.sampled_from([b"[", b'{"a":']))
def test_nesting_is_bounded_on_both_paths(depth: int, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    raw = opener * depth + b"1" + closer * depth
    out = same(raw)
    assert isinstance(out, Rejection)
    assert (out.reason == "json_too_deep") == (depth > 16), (depth, out)
