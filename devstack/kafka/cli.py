"""``learnrec kafka up|down|status|fetch``, and how commands find the broker of ``kafka up``.

The one broker story: a command reads ``KAFKA_BOOTSTRAP_SERVERS``; where that is unset,
the ``learnrec`` command line asks :func:`up_bootstrap` for the broker that ``learnrec
kafka up`` started (its state file under ``LEARNREC_BROKER_DATA_DIR``), and the command
refuses when none runs. No command starts a broker of its own: a throwaway broker exists
only where its caller owns it (the demo, the tests, the benchmarks: ``owned_kafka``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from devstack.kafka.config import (
    EXTERNAL_BOOTSTRAP_ENV,
    STATE_FILE,
    BrokerError,
    BrokerSettings,
    read_state,
)
from devstack.kafka.fetch import fetch_jars
from devstack.kafka.process import running_broker, start_local_kafka, stop_broker
from devstack.kafka.system import port_open
from learn_core.settings import ConfigError, load

log = logging.getLogger(__name__)


def up_bootstrap(settings: BrokerSettings | None = None) -> str:
    """The bootstrap address of the running broker of ``learnrec kafka up``.

    Running means: its state file is there, its pid is alive and is that broker, and its
    port answers. Otherwise a ``ConfigError`` says what to do, naming the variable.
    """
    settings = settings or load(BrokerSettings)
    data_dir = settings.up_data_dir()
    state = read_state(data_dir)
    if state is None:
        why = f"no state file {data_dir / STATE_FILE}"
    elif running_broker(data_dir) is None:
        why = f"its pid {state.pid} (state file {data_dir / STATE_FILE}) is not running"
    elif not port_open(state.port):
        why = f"pid {state.pid} runs but nothing answers on {state.bootstrap}"
    else:
        log.info("using the broker of `learnrec kafka up` at %s", state.bootstrap)
        return state.bootstrap
    raise ConfigError(
        f"{EXTERNAL_BOOTSTRAP_ENV} is not set and no broker of `learnrec kafka up` runs ({why}). "
        f"Start one with `learnrec kafka up`, or set {EXTERNAL_BOOTSTRAP_ENV}=host:port "
        "to use an existing broker."
    )


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``learnrec kafka up|down|status|fetch``."""
    parser = subparsers.add_parser("kafka", help="run a local single-node Kafka broker (no Docker)")
    actions = parser.add_subparsers(dest="kafka_action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="broker data dir (default: LEARNREC_BROKER_DATA_DIR, else "
            "<cache dir>/kafka/default); other commands use the broker of this dir only "
            "when LEARNREC_BROKER_DATA_DIR names it",
        )

    up = actions.add_parser(
        "up", help="start the broker (detached) and print its bootstrap address"
    )
    common(up)
    up.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: a free one)")
    up.set_defaults(func=_cli_up)

    down = actions.add_parser("down", help="stop the broker")
    common(down)
    down.add_argument("--wipe", action="store_true", help="also delete the data dir")
    down.set_defaults(func=_cli_down)

    status = actions.add_parser("status", help="say whether the broker runs; exit 1 if not")
    common(status)
    status.set_defaults(func=_cli_status)

    fetch = actions.add_parser("fetch", help="only fetch the broker jars into the cache")
    fetch.set_defaults(func=_cli_fetch)


def _data_dir(args: argparse.Namespace) -> Path:
    return args.data_dir.resolve() if args.data_dir else load(BrokerSettings).up_data_dir()


def _cli_up(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    state = running_broker(data_dir)
    if state is not None:
        print(f"already running: {state.bootstrap} (pid {state.pid}, data {data_dir})")
        return 0
    try:
        kafka = start_local_kafka(data_dir, args.port, detach=True)
    except BrokerError as exc:
        print(f"error: {exc}")
        return 1
    print(kafka.bootstrap)
    return 0


def _cli_down(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    stopped = stop_broker(data_dir)
    print("stopped" if stopped else "not running")
    if args.wipe:
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"removed {data_dir}")
    return 0


def _cli_status(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    state = running_broker(data_dir)
    if state is None:
        print(f"not running (data {data_dir})")
        return 1
    print(
        f"running: {state.bootstrap} (pid {state.pid}, Kafka {state.version}, since {state.started_at})"
    )
    return 0


def _cli_fetch(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        libs = fetch_jars()
    except BrokerError as exc:
        print(f"error: {exc}")
        return 1
    print(f"{libs} ({time.monotonic() - started:.1f}s)")
    return 0
