"""CLI for event producers: ``produce`` (JSON lines), ``replay`` (data sets) and ``dlq`` (inspect)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import BinaryIO

from learn_core.settings import InputError, load
from streaming.settings import KafkaSettings


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "produce",
        help="validate JSON-lines events and publish them",
        description="Reads one JSON event per line (item-created or interaction), validates it "
        "against the contract and publishes it keyed by entity id. Invalid lines are reported "
        "and not sent.",
    )
    p.add_argument("file", nargs="?", default="-", help="JSON-lines file, '-' for stdin")
    p.set_defaults(func=_produce)

    r = sub.add_parser(
        "replay",
        help="publish a data set as events (items first, then interactions in time order)",
    )
    r.add_argument("--dataset", default="sample", help="sample | ml-100k | ml-1m-subset")
    r.add_argument("--data", default=None, help="directory of the MovieLens files")
    pace = r.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, default=None, help="events per second")
    pace.add_argument("--max-rate", action="store_true", help="as fast as possible (default)")
    r.add_argument("--limit", type=int, default=None, help="send at most N interactions")
    r.add_argument(
        "--restamp",
        action="store_true",
        help="stamp interactions with the send time instead of the data set's",
    )
    r.add_argument("--no-items", action="store_true", help="skip the catalogue")
    r.add_argument("--no-interactions", action="store_true", help="skip the interactions")
    r.set_defaults(func=_replay)

    d = sub.add_parser("dlq", help="print dead-lettered records with their reasons")
    d.add_argument("--max", type=int, default=20)
    d.set_defaults(func=_dlq)


def _bootstrap(k: KafkaSettings) -> str:
    from streaming.kafka_io import prepare_kafka

    return prepare_kafka(k)[1]


def _produce(args: argparse.Namespace) -> int:
    from streaming.producer import EventProducer
    from streaming.validate import Rejection, decode, limits_from_env

    k = load(KafkaSettings)
    limits = limits_from_env()
    stream = sys.stdin.buffer if args.file == "-" else _open_input(args.file)
    bad = 0
    with stream, EventProducer(_bootstrap(k), k) as producer:
        for n, line in enumerate(stream, 1):
            if not line.strip():
                continue
            out = decode(line.strip(), limits=limits, now=datetime.now(UTC))
            if isinstance(out, Rejection):
                bad += 1
                print(f"line {n}: {out.reason}: {out.detail}", file=sys.stderr)
                continue
            producer.send(out)
        sent = producer.sent
    print(f"sent {sent} events, rejected {bad}")
    return 1 if bad else 0


def _open_input(path: str) -> BinaryIO:
    """The events file, opened before any broker is reached; a bad path is one line."""
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's ``with``
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _replay(args: argparse.Namespace) -> int:
    from learn_core.datasets import load_dataset
    from streaming.producer import EventProducer
    from streaming.replay import replay

    k = load(KafkaSettings)
    ds = load_dataset(args.dataset, args.data)
    with EventProducer(_bootstrap(k), k) as producer:
        stats = replay(
            ds,
            producer,
            rate=args.rate,
            limit=args.limit,
            items=not args.no_items,
            interactions=not args.no_interactions,
            restamp=args.restamp,
            progress=True,
        )
    print(
        f"replayed {stats.items} items and {stats.interactions} interactions "
        f"in {stats.seconds:.1f}s ({stats.events_per_s:.0f} events/s)"
    )
    return 0


def _dlq(args: argparse.Namespace) -> int:
    from streaming.dead_letter import describe
    from streaming.kafka_io import make_consumer

    k = load(KafkaSettings)
    consumer = make_consumer(_bootstrap(k), [k.dlq_topic], group_id=None, consumer_timeout_ms=2000)
    seen = 0
    try:
        for rec in consumer:
            seen += 1
            if seen > args.max:
                break
            print(describe(rec.headers, rec.value))
    finally:
        consumer.close()
    if not seen:  # silence read as "the command did not work"
        print(f"no dead letters in {k.dlq_topic}")
    return 0
