"""``learnrec``: one entry point, one subcommand per component.

Each component module exposes ``add_cli(subparsers)``; importing them is cheap
(torch, transformers and feast are imported inside the handlers).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from learn_core.settings import ConfigError

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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "feast", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # With KAFKA_BOOTSTRAP_SERVERS unset, commands use the broker of `learnrec kafka up`
    # (or refuse); the stages themselves know nothing of the development stack.
    from devstack.kafka import up_bootstrap
    from streaming.kafka_io import set_bootstrap_fallback

    set_bootstrap_fallback(up_bootstrap)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
