"""A consumer as a service: its command line, and SIGTERM/SIGINT as a clean stop.

Apart from the loop so that the loop stays the data path; both consumers' commands
(``consume-items``, ``consume-interactions``) are built here.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from streaming.batch import LoopStats

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals(
    stop: threading.Event, signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
) -> Iterator[threading.Event]:
    """Turn SIGTERM/SIGINT into ``stop.set()`` while the block runs.

    ``docker stop``, Kubernetes and systemd stop a service with SIGTERM; its default
    action kills the process without leaving the consumer group, so a restart waits a
    whole session timeout for its partitions. With this the loop ends after the batch
    in flight (written and committed, or abandoned uncommitted if it was retrying), and
    the caller closes the consumer, which leaves the group. A second signal is not
    caught: it acts as it did before (kills, or raises ``KeyboardInterrupt``).
    Only the main thread may install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        log.warning(
            "%s: stopping after the batch in flight (again to force)", signal.Signals(signum).name
        )
        stop.set()
        for s, h in previous.items():
            signal.signal(s, h)

    for s in signums:
        previous[s] = signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def add_consumer_command(
    sub: Any, name: str, help_text: str, run: Callable[..., LoopStats]
) -> None:
    """``learnrec <name> [--idle-exit S]``: run a consumer service and print its counts.

    SIGTERM and SIGINT stop it cleanly (``stop_on_signals``): exit status 0 and the
    summary line, as after ``--idle-exit``.
    """

    def _cli(args: Any) -> int:
        with stop_on_signals(threading.Event()) as stop:
            stats = run(stop=stop, idle_exit_s=args.idle_exit)
        print(
            f"consumed {stats.records} records: {stats.accepted} accepted, "
            f"{stats.dead_lettered} dead-lettered"
        )
        return 0

    p = sub.add_parser(name, help=help_text)
    p.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        metavar="S",
        help="exit after S seconds without records (default: run until SIGTERM or Ctrl-C)",
    )
    p.set_defaults(func=_cli)
