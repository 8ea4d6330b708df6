"""APScheduler (3.x) wiring: a persistent job store, one instance per job, coalesced misfires.

Jobs are stored by *reference* (``trainers.jobs.scheduler:run_job``) in a SQLAlchemy job
store on SQLite under ``cache_dir()/jobs/``, so a restarted scheduler keeps its
schedule and next run times. ``max_instances=1`` keeps a slow retrain from overlapping
the next; ``coalesce=True`` runs a backlog of missed runs once, not N times.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from learn_core.settings import cache_dir, load

log = logging.getLogger(__name__)

JOBS = ("retrain", "backfill")


class SchedulerSettings(BaseSettings):
    """Scheduler (env prefix ``LEARNREC_SCHEDULER_``)."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_SCHEDULER_", extra="forbid", allow_inf_nan=False
    )

    retrain_every_min: float = Field(
        360.0, gt=0, le=43_200, description="period of the retrain job (at most 30 days)"
    )
    backfill_every_min: float | None = Field(
        None, gt=0, le=43_200, description="optional re-backfill of the current version"
    )
    misfire_grace_s: int = Field(
        3600, ge=1, le=604_800, description="late runs within this still run"
    )
    jobstore_path: Path | None = Field(None, description="default cache_dir()/jobs/jobs.sqlite")

    def store_path(self) -> Path:
        return self.jobstore_path or cache_dir() / "jobs" / "jobs.sqlite"


def run_job(name: str, force: bool = False, engine: str | None = None) -> dict[str, Any]:
    """Run one job now, in this process; also the scheduler's job function.

    ``engine``: where the backfill's tower passes run (``local`` | ``ray``; default
    ``LEARNREC_BACKFILL_ENGINE``).
    """
    from dataclasses import asdict

    from feature_repo.store import open_store
    from learn_core.serving import as_serving, open_registry
    from trainers.jobs.ray_backfill import BackfillEngineSettings
    from trainers.jobs.retrain import RetrainSettings, retrain

    if name not in JOBS:
        raise ValueError(f"unknown job {name!r}; known: {list(JOBS)}")
    # Every setting of the job is checked before any work: a bad engine setting would
    # otherwise surface after a retrain's training, or never while no model is current.
    load(BackfillEngineSettings, **({"engine": engine} if engine else {}))
    s = load(RetrainSettings)
    handle = open_store()
    try:
        registry = open_registry()
        if name == "retrain":
            report = retrain(handle, registry, s, progress=True, force=force)
            return {"job": name, "skipped": report is None} | (asdict(report) if report else {})

        from trainers.jobs.backfill import backfill, purge_retired

        version = registry.current_version()
        if version is None:
            return {"job": name, "skipped": True, "reason": "no current model"}
        from trainers.jobs.ray_backfill import engine_from_settings

        model = as_serving(version, registry.load(version))
        res = backfill(
            handle,
            model,
            history_len=s.history_len,
            progress=True,
            engine=engine_from_settings(str(registry.root), model, s.history_len, engine),
        )
        # A retrain purges the versions it replaced once their grace is over; without this
        # a deployment that only backfills between retrains kept their rows until then.
        purged = purge_retired(handle, registry, s.retire_grace_s)
        return {"job": name} | asdict(res) | {"purged": purged}
    finally:
        handle.close()


def build_scheduler(settings: SchedulerSettings | None = None, *, blocking: bool = True) -> Any:
    """A scheduler with the jobs registered (``replace_existing``: config wins on restart)."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler

    from trainers.jobs.ray_backfill import BackfillEngineSettings
    from trainers.jobs.retrain import RetrainSettings

    s = settings or load(SchedulerSettings)
    load(BackfillEngineSettings)  # the jobs' settings fail now, not at their first run
    load(RetrainSettings)
    path = s.store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    cls = BlockingScheduler if blocking else BackgroundScheduler
    sched = cls(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{path}")},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": s.misfire_grace_s,
        },
        timezone="UTC",
    )
    ref = f"{__name__}:run_job"
    sched.add_job(
        ref,
        "interval",
        minutes=s.retrain_every_min,
        args=["retrain"],
        id="retrain",
        replace_existing=True,
    )
    if s.backfill_every_min:
        sched.add_job(
            ref,
            "interval",
            minutes=s.backfill_every_min,
            args=["backfill"],
            id="backfill",
            replace_existing=True,
        )
    elif sched.get_job("backfill") is not None:
        sched.remove_job("backfill")
    log.info("scheduler: job store %s, retrain every %.0f min", path, s.retrain_every_min)
    return sched
