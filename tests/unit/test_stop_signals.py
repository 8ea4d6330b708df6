"""SIGTERM/SIGINT stop the consumer loop cleanly (issue 11, point 4), without a broker."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from streaming.service_cli import stop_on_signals


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
