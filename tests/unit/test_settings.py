"""Bad configuration fails at start-up with a message naming the environment variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from learn_core.embedding.hf import EmbedderSettings
from learn_core.settings import ConfigError, load
from streaming.item_consumer import ItemConsumerSettings
from streaming.settings import KafkaSettings, LimitsSettings


@pytest.mark.parametrize(
    ("cls", "var", "value"),
    [
        (KafkaSettings, "LEARNREC_KAFKA_PARTITIONS", "many"),
        (KafkaSettings, "LEARNREC_KAFKA_PARTITIONS", "0"),
        (LimitsSettings, "LEARNREC_LIMITS_MAX_TEXT_CHARS", "-5"),
        (EmbedderSettings, "LEARNREC_EMBEDDER_DEVICE", "tpu"),
        (ItemConsumerSettings, "LEARNREC_ITEM_CONSUMER_MAX_BATCH", "0"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch, cls, var, value) -> None:  # noqa: ANN001
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        load(cls)


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="LEARNREC_KAFKA_NOPE"):
        load(KafkaSettings, nope=1)


def test_defaults_run_on_a_laptop(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    k = load(KafkaSettings)
    assert k.bootstrap_servers is None and k.items_topic == "learn.items"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert load(KafkaSettings).bootstrap_servers == "127.0.0.1:1"


def test_cli_reports_config_error_and_exit_code() -> None:
    env = {"LEARNREC_KAFKA_PARTITIONS": "lots", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "learnrec", "replay", "--dataset", "sample"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2
    assert "LEARNREC_KAFKA_PARTITIONS" in out.stderr


def test_sliding_pairing_with_item_variant_1_fails_naming_both_settings(monkeypatch) -> None:
    from learn_core.settings import ConfigError, load
    from trainers.jobs.retrain import RetrainSettings

    monkeypatch.setenv("LEARNREC_RETRAIN_PAIRING", "sliding")
    monkeypatch.setenv("LEARNREC_RETRAIN_ITEM_VARIANT", "1")
    with pytest.raises(
        ConfigError, match="LEARNREC_RETRAIN_ITEM_VARIANT.*LEARNREC_RETRAIN_PAIRING"
    ):
        load(RetrainSettings)
    monkeypatch.setenv("LEARNREC_RETRAIN_ITEM_VARIANT", "2")
    # The product's recipe, the anchored hybrid, has no tower to override: refused by name.
    with pytest.raises(ConfigError, match="LEARNREC_RETRAIN_PAIRING.*'anchored'"):
        load(RetrainSettings)
    monkeypatch.setenv("LEARNREC_RETRAIN_RECIPE", "content-catalogue-cvr")  # LEARN's towers
    assert load(RetrainSettings).effective_recipe().item_variant == 2
