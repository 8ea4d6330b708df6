"""``bench.scale_batch``: its options are checked before anything starts (a run takes
minutes: a Ray and two torchrun launches; its figures are in docs/BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scale_batch import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--items", "0"], "--items must be positive"),
        (["--items", "100"], "at least 300"),
        (["--epochs", "0"], "--epochs must be positive"),
        (["--batch-rows", "-1"], "--batch-rows must be positive"),
    ],
)
def test_bad_options_fail_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x.json"), *argv])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
