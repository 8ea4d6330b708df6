"""The README's "Using it" block, run top to bottom on the sample, as a user would.

Every line runs as written, in one bash session with ``set -e``, with three
substitutions a reader makes by hand: the export line takes the address that
``learnrec kafka up`` printed, the HTTP port is a free one, and training runs one
epoch of each stage (``LEARNREC_RETRAIN_EPOCHS``, ``_CVR_EPOCHS``) so that the whole
block stays short (about 150 s on two idle cores).
Caches, broker, store and registry live in a temporary ``LEARNREC_CACHE_DIR``; only
the broker jars and the content-embedding cache are linked in from the real one.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cache_links import linked_cache_dir

ROOT = Path(__file__).resolve().parents[2]
# A hang guard, not a speed target (those live in bench/): ~150 s on 2 idle cores.
HANG_GUARD_S = 480

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def using_it_block(readme: str) -> list[str]:
    """The lines of the first ```bash block of the "## Using it" section."""
    section = readme.split("\n## Using it\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def as_script(lines: list[str], port: int) -> str:
    out = [
        "set -euo pipefail",
        "trap 'kill $(jobs -p) 2>/dev/null || true; learnrec kafka down >/dev/null 2>&1 || true' EXIT",
    ]
    for line in lines:
        cmd = line.split("  #", 1)[0].rstrip()
        if cmd.startswith("learnrec kafka up"):
            cmd = f'{cmd} | tee "$RUN_DIR/kafka-up.txt"'
        elif cmd.startswith("export KAFKA_BOOTSTRAP_SERVERS="):
            cmd = (
                "export KAFKA_BOOTSTRAP_SERVERS="
                '"$(grep -oE \'[0-9.]+:[0-9]+\' "$RUN_DIR/kafka-up.txt" | tail -n1)"'
            )
        cmd = cmd.replace("localhost:8000", f"localhost:{port}")
        out += [f'echo "+ [$SECONDS s]" {_quote(cmd)} >&2', cmd]
    return "\n".join(out) + "\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_block_is_parsed_as_expected() -> None:
    lines = using_it_block((ROOT / "README.md").read_text())
    assert lines[0].startswith("learnrec kafka up") and lines[-1].startswith("learnrec kafka down")
    script = as_script(lines, 1234)
    assert "localhost:1234/healthz" in script and "kafka-up.txt" in script


def test_readme_using_it_runs_top_to_bottom(tmp_path: Path) -> None:
    cache = linked_cache_dir(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEARNREC_", "KAFKA_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        LEARNREC_CACHE_DIR=str(cache),
        LEARNREC_RETRAIN_EPOCHS="1",
        LEARNREC_RETRAIN_CVR_EPOCHS="1",
        LEARNREC_RANKING_PORT=str(port),
        RUN_DIR=str(run_dir),
    )
    script = as_script(using_it_block((ROOT / "README.md").read_text()), port)
    (run_dir / "readme.sh").write_text(script)
    proc = subprocess.Popen(
        ["bash", str(run_dir / "readme.sh")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"README block ran over {HANG_GUARD_S}s:\n{out[-6000:]}")
    finally:  # the broker of `kafka up` runs detached: stop it whatever happened
        subprocess.run(
            [sys.executable, "-m", "learnrec", "kafka", "down"],
            env=env,
            capture_output=True,
            timeout=120,
        )
    (tmp_path / "readme.log").write_text(out)
    assert proc.returncode == 0, f"README block failed:\n{out[-6000:]}"
    assert "Traceback" not in out, out[-6000:]
    # kafka-python's lines about passing states are DEBUG (streaming/kafka_logs.py)
    noise = re.findall(r"^.* (?:WARNING|ERROR) kafka\..*$", out, re.M)
    assert not noise, "\n".join(noise[:10])
    assert re.search(r"sent 1 events, rejected 0", out)
    indexed = re.search(r'"indexed_items":(\d+)', out)  # /healthz: the index built at start
    assert indexed and int(indexed.group(1)) >= 500, out[-6000:]
    assert re.search(r'"status": "ok"', out), out[-6000:]  # rank: candidates scored
    assert re.search(r'"store":"ok"', out), out[-6000:]  # /healthz answered 200
