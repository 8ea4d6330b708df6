"""A user's mistakes get one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from learn_core.datasets import DatasetError, load_dataset
from tests.cli_child import run_learnrec


@pytest.mark.parametrize(
    ("name", "path", "message"),
    [
        ("nope", None, "unknown data set 'nope'; choose one of ml-100k, ml-1m-subset, sample"),
        ("ml-100k", None, "is read by path"),
        ("ml-100k", "/nonexistent/ml-100k", "does not exist"),
        ("ml-1m", "/", "lacks movies.dat"),
    ],
)
def test_dataset_errors_say_what_to_do(name: str, path: str | None, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(name, path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "--dataset", "nope"], "unknown data set 'nope'; choose one of"),
        (["replay", "--dataset", "ml-100k", "--data", "/nonexistent"], "does not exist"),
    ],
)
def test_replay_mistakes_are_one_line(argv: list[str], message: str) -> None:
    # A closed port: the data set is checked before any broker is needed.
    out = run_learnrec(*argv, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_rank_without_a_model_is_a_message(tmp_path: Path) -> None:
    out = run_learnrec(
        "rank",
        "u090",
        "i0001",
        LEARNREC_CACHE_DIR=str(tmp_path),
        LEARNREC_FEAST_DATA_DIR=str(tmp_path / "feast"),
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "error: no model has been promoted yet" in out.stderr
    assert "Traceback" not in out.stderr


def test_produce_of_a_missing_file_is_one_line() -> None:
    # A closed port: the file is opened before any broker is needed.
    out = run_learnrec("produce", "/nonexistent.jsonl", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert out.returncode == 2, out.stderr
    assert out.stderr == "error: cannot read /nonexistent.jsonl: No such file or directory\n"


def test_the_readme_placeholder_bootstrap_is_one_line(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    out = run_learnrec("produce", str(events), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:XXXXX")
    assert out.returncode == 2, out.stderr
    assert out.stderr == (
        "configuration error: invalid KafkaSettings: KAFKA_BOOTSTRAP_SERVERS: entry "
        "'127.0.0.1:XXXXX': port 'XXXXX' is not a number from 1 to 65535 "
        "(got '127.0.0.1:XXXXX')\n"
    )


def test_evaluate_without_a_model_stops_before_any_embedding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from trainers import cli

    def no_embedding(*_: object) -> None:
        raise AssertionError("evaluate loaded the data set and embedded it before the check")

    monkeypatch.setattr(cli, "_prepare", no_embedding)
    args = argparse.Namespace(
        dataset=None, data=None, epochs=None, registry=tmp_path / "registry", version=None
    )
    assert cli._evaluate(args) == 2
    assert "no current model" in capsys.readouterr().out


class _Records:
    """A consumer's iteration and close(), with no broker."""

    def __init__(self, values: list[bytes]) -> None:
        from types import SimpleNamespace

        self.records = [SimpleNamespace(headers=[], value=v) for v in values]
        self.closed = False

    def __iter__(self) -> object:
        return iter(self.records)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("values", "limit"), [([], 20), ([b"x"], 20), ([b"x", b"y"], 1)])
def test_dlq_says_when_the_topic_is_empty(
    values: list[bytes],
    limit: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    import streaming.kafka_io
    from streaming import cli_events

    records = _Records(values)
    monkeypatch.setenv("LEARNREC_KAFKA_DLQ_TOPIC", "test.dlq")
    monkeypatch.setattr(cli_events, "_bootstrap", lambda _k: "127.0.0.1:1")
    monkeypatch.setattr(streaming.kafka_io, "make_consumer", lambda *_a, **_k: records)
    assert cli_events._dlq(argparse.Namespace(max=limit)) == 0
    out = capsys.readouterr().out.splitlines()
    assert records.closed
    if values:
        assert len(out) == min(limit, len(values)) and "no dead letters" not in out[0]
    else:
        assert out == ["no dead letters in test.dlq"]
