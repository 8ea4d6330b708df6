"""``learnrec scheduler`` (run the APScheduler loop) and ``learnrec run-job NAME`` (once, now)."""

from __future__ import annotations

import argparse
import json


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scheduler", help="run the periodic jobs (retrain, backfill) until Ctrl-C")
    p.add_argument("--list", action="store_true", help="print the stored jobs and exit")
    p.set_defaults(func=_scheduler)

    r = sub.add_parser("run-job", help="run one job now: retrain | backfill")
    r.add_argument("name", choices=["retrain", "backfill"])
    r.add_argument("--force", action="store_true", help="retrain: promote even if worse")
    r.add_argument(
        "--engine",
        choices=["local", "ray"],
        help="backfill: where the tower passes run (default LEARNREC_BACKFILL_ENGINE, local)",
    )
    r.set_defaults(func=_run_job)


def _scheduler(args: argparse.Namespace) -> int:
    from trainers.jobs.scheduler import build_scheduler

    if args.list:
        sched = build_scheduler(blocking=False)
        sched.start(paused=True)
        for job in sched.get_jobs():
            print(f"{job.id}: {job.trigger} next {job.next_run_time}")
        sched.shutdown(wait=False)
        return 0
    build_scheduler(blocking=True).start()
    return 0


def _run_job(args: argparse.Namespace) -> int:
    from trainers.jobs.scheduler import run_job

    print(
        json.dumps(run_job(args.name, force=args.force, engine=args.engine), indent=2, default=str)
    )
    return 0
