"""Bootstrap addresses are parsed at start-up: a bad one is one line naming the variable."""

from __future__ import annotations

import pytest

from learn_core.settings import ConfigError, load
from streaming.settings import KafkaSettings, parse_bootstrap


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:9092", [("127.0.0.1", 9092)]),
        (
            "kafka-0.example.com:9092, kafka_1:19092",
            [("kafka-0.example.com", 9092), ("kafka_1", 19092)],
        ),
        ("[::1]:9092", [("::1", 9092)]),
        ("PLAINTEXT://broker:9093", [("broker", 9093)]),
    ],
)
def test_good_addresses_parse(value: str, parsed: list[tuple[str, int]]) -> None:
    assert parse_bootstrap(value) == parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("127.0.0.1:XXXXX", "port 'XXXXX' is not a number from 1 to 65535"),
        ("127.0.0.1", "has no port"),
        ("broker:0", "port '0' is not a number"),
        ("broker:70000", "port '70000' is not a number"),
        ("", "an empty entry has no port"),
        ("broker:9092,", "an empty entry has no port"),
        (":9092", "'' is not a host name"),
        ("my broker:9092", "'my broker' is not a host name"),
        ("[::1]", "has no port"),
        ("[]:9092", "'' is not a host name"),
    ],
)
def test_bad_addresses_say_which_entry_and_why(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bootstrap(value)


@pytest.mark.parametrize("var", ["KAFKA_BOOTSTRAP_SERVERS", "LEARNREC_KAFKA_BOOTSTRAP_SERVERS"])
def test_the_readme_placeholder_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("LEARNREC_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv(var, "127.0.0.1:XXXXX")
    with pytest.raises(ConfigError) as err:
        load(KafkaSettings)
    assert str(err.value) == (
        f"invalid KafkaSettings: {var}: entry '127.0.0.1:XXXXX': port 'XXXXX' is not a "
        "number from 1 to 65535 (got '127.0.0.1:XXXXX')"
    )
