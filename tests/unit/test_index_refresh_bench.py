"""``bench.index_refresh``: its options are checked, and a short embedded run reads every
new item with both pollers and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.index_refresh import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--profiles", "embeded"], "--profiles: unknown"),
        (["--rate", "0"], "--period and --rate"),
        (["--seconds", "0.5"], "at least two periods"),
    ],
)
def test_bad_options_fail_naming_the_option(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        main(["--out", str(tmp_path / "x.json"), *argv])


def test_a_short_embedded_run_reads_every_new_item(tmp_path: Path) -> None:
    out = tmp_path / "refresh.json"
    argv = ["--out", str(out), "--profiles", "embedded", "--items", "50", "--seconds", "0.2"]
    assert main([*argv, "--period", "0.1", "--rate", "100"]) == 0
    got = json.loads(out.read_text())["profiles"]["embedded"]
    assert got["polls"] == 2 and got["batch"] == 10
    for poller in ("cursor", "window"):
        assert got[poller]["read_every_new_item"] is True
    assert got["cursor"]["rows_per_poll_mean"] == 10  # only what was stored since
