"""Every numeric setting is finite and within a stated range, refused at start-up by name.

Walks every numeric field of every class of ``learnrec settings`` with values that
used to pass and crash later (``inf`` once made the item consumer die with
``OverflowError`` at its first store error), through the environment as a user sets them.
"""

from __future__ import annotations

import os

import pytest
from pydantic_settings import BaseSettings

from learn_core.settings import ConfigError, env_names, load
from learnrec.settings_doc import _classes, is_numeric, value_range

#: (variable, value) pairs that are meant to be accepted, with the reason.
ALLOWED = {
    ("LEARNREC_KAFKA_RETENTION_MS", "-1"): "Kafka's own 'keep forever' (retention.ms=-1)",
}
BAD_VALUES = ["inf", "-inf", "nan", "-1", "abc", "1e400"]


def _numeric_settings() -> list[tuple[type[BaseSettings], str]]:
    out = []
    for cls in _classes():
        for name, field in cls.model_fields.items():
            if is_numeric(field):
                out.append((cls, name))
    return out


NUMERIC = _numeric_settings()


def _variables(cls: type[BaseSettings], name: str) -> list[str]:
    field = cls.model_fields[name]
    choices = getattr(field.validation_alias, "choices", None)
    if choices:
        return [str(c).upper() for c in choices]
    prefix = str(cls.model_config.get("env_prefix", ""))
    return [f"{prefix}{name}".upper()]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith(("LEARNREC_", "KAFKA_")) and key != "LEARNREC_CACHE_DIR":
            monkeypatch.delenv(key)


def test_the_walk_covers_every_class_with_numbers() -> None:
    classes = {cls.__name__ for cls, _ in NUMERIC}
    assert len(NUMERIC) >= 50
    assert {"ItemConsumerSettings", "InteractionConsumerSettings", "BrokerSettings"} <= classes
    walked = {var for cls, name in NUMERIC for var in _variables(cls, name)}
    assert "LEARNREC_ITEM_CONSUMER_RETRY_BACKOFF_S" in walked
    every = set().union(*(env_names(cls) for cls in _classes()))
    assert walked <= every


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize(("cls", "name"), NUMERIC, ids=[f"{c.__name__}.{n}" for c, n in NUMERIC])
def test_bad_number_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, cls: type[BaseSettings], name: str, value: str
) -> None:
    for var in _variables(cls, name):
        if (var, value) in ALLOWED:
            monkeypatch.setenv(var, value)
            assert str(getattr(load(cls), name)) == value, ALLOWED[(var, value)]
            monkeypatch.delenv(var)
            continue
        monkeypatch.setenv(var, value)
        with pytest.raises(ConfigError) as err:
            load(cls)
        message = str(err.value)
        assert var in message and "\n" not in message, message
        monkeypatch.delenv(var)


@pytest.mark.parametrize(("cls", "name"), NUMERIC, ids=[f"{c.__name__}.{n}" for c, n in NUMERIC])
def test_every_number_has_a_stated_range(cls: type[BaseSettings], name: str) -> None:
    # Both ends: the table (README, `learnrec settings`) shows it as "lo ≤ v ≤ hi".
    shown = value_range(cls.model_fields[name])
    assert shown.count("v") == 1 and shown.index("v") not in (0, len(shown) - 1), shown
    assert load(cls) is not None  # the defaults lie inside it


def test_known_offenders_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from streaming.interaction_consumer import InteractionConsumerSettings
    from streaming.item_consumer import ItemConsumerSettings

    for cls, var in [
        (ItemConsumerSettings, "LEARNREC_ITEM_CONSUMER_RETRY_BACKOFF_S"),
        (ItemConsumerSettings, "LEARNREC_ITEM_CONSUMER_RETRY_MAX_BACKOFF_S"),
        (InteractionConsumerSettings, "LEARNREC_INTERACTION_CONSUMER_HELD_RECHECK_S"),
    ]:
        monkeypatch.setenv(var, "inf")
        with pytest.raises(ConfigError, match=f"{var}: Input should be a finite number"):
            load(cls)
        monkeypatch.setenv(var, "7200")  # above the stated hour
        with pytest.raises(ConfigError, match=f"{var}: Input should be less than or equal"):
            load(cls)
        monkeypatch.delenv(var)
