"""``python -m trainers``: what each ``torchrun`` rank runs.

``train`` is ``learnrec train`` (same flags; under ``torchrun`` each rank trains its share
and rank 0 saves); ``fit-job DIR`` is the retraining job's training step
(``trainers.torchrun_fit``). ``torchrun --nproc_per_node N -m trainers train …`` works
by hand as well.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from trainers.cli import add_cli


def _fit_job(args: argparse.Namespace) -> int:
    from trainers import distributed
    from trainers.torchrun_fit import run_job

    dist = distributed.from_env()
    try:
        run_job(args.dir, dist)
    finally:
        distributed.close(dist)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_cli(sub)
    job = sub.add_parser("fit-job", help="train from a hand-off directory (the retrain job)")
    job.add_argument("dir", type=Path)
    job.set_defaults(func=_fit_job)
    args = parser.parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
