"""SIGTERM/SIGINT stop the consumer loop cleanly (issue 11, point 4), without a broker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streaming.service_cli import stop_on_signals

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_sets_stop_and_handlers_are_restored(signum: int) -> None:
    before = signal.getsignal(signum)
    with stop_on_signals(threading.Event()) as stop:
        assert signal.getsignal(signum) is not before
        os.kill(os.getpid(), signum)  # handled between bytecodes, in this thread
        assert stop.wait(5), "the signal did not set the stop event"
        # the first signal put the previous handler back: a second one forces
        assert signal.getsignal(signum) is before
    assert signal.getsignal(signum) is before


def test_off_the_main_thread_nothing_is_installed() -> None:
    seen: list[object] = []

    def body() -> None:
        with stop_on_signals(threading.Event()):
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [before]


def test_serve_exits_0_after_its_clean_shutdown_on_sigterm(tmp_path: Path) -> None:
    """uvicorn re-raises the SIGTERM it stopped on; the default handler made that -15."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEARNREC_", "KAFKA_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        LEARNREC_CACHE_DIR=str(tmp_path),  # embedded store, empty registry: no service needed
        LEARNREC_FEAST_DATA_DIR=str(tmp_path / "feast"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "learnrec", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 50
        while not _answers(port):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "serve did not start listening within 50 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert "Finished server process" in out and "Traceback" not in out, out[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
