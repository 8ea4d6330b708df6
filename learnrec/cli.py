"""``learnrec``: one entry point, one subcommand per component.

Each component module exposes ``add_cli(subparsers)``; importing them is cheap
(torch, transformers and feast are imported inside the handlers).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from learn_core.runtime import keep_triton_out
from learn_core.settings import ConfigError, InputError, ServiceUnavailableError

#: Modules that register subcommands, in the order of the data flow.
COMPONENTS = [
    "devstack.kafka.cli",  # kafka up|down|status|fetch (the local development broker)
    "streaming.cli_events",  # produce, replay, dlq
    "streaming.item_consumer",  # consume-items
    "streaming.interaction_consumer",  # consume-interactions
    "feature_repo.cli",  # feast apply/info
    "trainers.cli",  # train, evaluate
    "trainers.jobs.cli",  # scheduler, run-job
    "ranking.cli",  # serve, rank
    "learnrec.demo",  # demo
    "learnrec.settings_doc",  # settings
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="learnrec",
        description="LEARN on streams: Kafka events -> LLM content embeddings and user-tower "
        "embeddings -> Feast -> ranking.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMPONENTS:
        importlib.import_module(name).add_cli(sub)
    return parser


#: ``LEARNREC_*`` variables read by something other than a settings class: the cache dir
#: (``learn_core.settings.cache_dir``), docker compose's image tag.
EXTRA_ENV = {"LEARNREC_CACHE_DIR", "LEARNREC_IMAGE_TAG"}
#: Prefixes of variables read by scripts and tests, never by a command:
#: ``.ci/services.sh`` (``LEARNREC_SERVICES_*``), the fault-injection test (``LEARNREC_FAULT_*``).
EXTRA_ENV_PREFIXES = ("LEARNREC_SERVICES_", "LEARNREC_FAULT_")


def known_env() -> set[str]:
    """Every variable a settings class reads, plus ``EXTRA_ENV``."""
    from pydantic_settings import BaseSettings

    from learn_core.settings import env_names
    from learnrec.settings_doc import _classes

    classes: set[type[BaseSettings]] = set(_classes())
    importlib.import_module("streaming.consumer")  # ConsumerSettings, the loops' base
    todo = list(BaseSettings.__subclasses__())
    while todo:  # every settings class imported so far, subclasses included
        cls = todo.pop()
        classes.add(cls)
        todo.extend(cls.__subclasses__())
    known = set(EXTRA_ENV)
    for cls in classes:
        known |= env_names(cls)
    return known


def check_env() -> None:
    """Fail on a ``LEARNREC_*`` variable no setting reads (a typo would be silently ignored)."""
    import os

    from learn_core.settings import check_environment

    if any(k.upper().startswith("LEARNREC_") for k in os.environ):
        check_environment(known_env(), allowed_prefixes=EXTRA_ENV_PREFIXES)


#: Commands that open the feature store: its services are checked before anything slow.
STORE_COMMANDS = {
    "feast",
    "consume-items",
    "consume-interactions",
    "run-job",
    "scheduler",
    "serve",
    "rank",
}


def check_store(command: str | None) -> None:
    """Fail in seconds, naming the setting and the address, when a store service is down."""
    if command not in STORE_COMMANDS:
        return
    from feature_repo.settings import FeastSettings
    from feature_repo.store import check_services
    from learn_core.settings import load

    check_services(load(FeastSettings))


def one_line_client_errors(record: logging.LogRecord) -> bool:
    """Client libraries' recoverable errors as one line, not a traceback.

    kafka-python logs a dropped broker connection with ``log.exception`` and then
    reconnects by itself; the stack trace tells a user nothing (``-v`` keeps it).
    """
    if record.exc_info and record.name.startswith(CLIENT_LOGGERS):
        exc = record.exc_info[1]
        record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
        record.args = None
        record.exc_info = None
        record.exc_text = None
    return True


#: Loggers whose tracebacks are folded into one line unless ``--verbose``.
CLIENT_LOGGERS = ("kafka.", "feast.", "httpx.", "urllib3.")


def quiet_clients() -> None:
    """Client libraries say warnings and worse; two of their warnings are not for users."""
    for noisy in ("kafka", "feast", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kafka-python warns "subscription unchanged" at every consumer start (our subscribe
    # after its own), and "Task ... ran for 0.110s ... blocking the event loop" whenever
    # a busy machine delays its I/O thread (seen in the demo at load 8): harmless, and
    # what a user reads as a problem. ``--verbose`` does not bring them back either.
    logging.getLogger("kafka.consumer.subscription_state").setLevel(logging.ERROR)
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    # Lines about a passing state (a client's first metadata refresh, a group coordinator
    # still loading, a socket closed under its reader at shutdown) move to DEBUG; the rest
    # of those loggers still speak (streaming/kafka_logs.py).
    from streaming.kafka_logs import quiet_benign_kafka_logs

    quiet_benign_kafka_logs()


def main(argv: list[str] | None = None) -> int:
    keep_triton_out()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_clients()
    if not args.verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(one_line_client_errors)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # With KAFKA_BOOTSTRAP_SERVERS unset, commands use the broker of `learnrec kafka up`
    # (or refuse); the stages themselves know nothing of the development stack.
    from devstack.kafka import up_bootstrap
    from streaming.kafka_io import set_bootstrap_fallback

    set_bootstrap_fallback(up_bootstrap)
    try:
        if args.command != "settings":  # the table must print even with a typo set
            check_env()
            check_store(args.command)
        return int(args.func(args) or 0)
    except ServiceUnavailableError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
