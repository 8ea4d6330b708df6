"""Jobs: the promotion rule, the hold-out boundary and the scheduler's job defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainers.jobs.holdout import should_promote
from trainers.jobs.scheduler import SchedulerSettings, build_scheduler
from trainers.jobs.training_data import holdout_start


def test_promotion_rule_within_tolerance_and_reasons() -> None:
    assert should_promote(0.20, None, 0.01) == (True, "no current model")
    ok, why = should_promote(0.195, 0.20, 0.01)
    assert ok and ">=" in why
    ok, why = should_promote(0.18, 0.20, 0.01)
    assert not ok and "keeping the current model" in why
    ok, _ = should_promote(float("nan"), 0.2, 0.01)
    assert not ok


def test_holdout_start_leaves_the_newest_fraction_after_it() -> None:
    ts = pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC")
    df = pd.DataFrame({"event_timestamp": ts.to_series().sample(frac=1, random_state=0).values})
    cut = holdout_start(df, 0.1)
    after = (pd.to_datetime(df["event_timestamp"], utc=True) >= cut).sum()
    assert after == 10


def test_scheduler_persists_jobs_with_one_instance_and_coalescing(tmp_path: Path) -> None:
    s = SchedulerSettings(jobstore_path=tmp_path / "jobs.sqlite", retrain_every_min=30)
    sched = build_scheduler(s, blocking=False)
    sched.start(paused=True)
    try:
        job = sched.get_job("retrain")
        assert job is not None and job.max_instances == 1 and job.coalesce is True
        assert job.func_ref == "trainers.jobs.scheduler:run_job" and job.args == ("retrain",)
    finally:
        sched.shutdown(wait=False)
    assert (tmp_path / "jobs.sqlite").exists()
    # A restarted scheduler finds the stored job (replace_existing keeps one copy).
    again = build_scheduler(s, blocking=False)
    again.start(paused=True)
    try:
        assert [j.id for j in again.get_jobs()] == ["retrain"]
        assert np.isclose(again.get_job("retrain").trigger.interval.total_seconds(), 1800)
    finally:
        again.shutdown(wait=False)


def test_a_bad_engine_setting_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked at the start (a retrain would otherwise train first; a backfill with no
    current model would never read it), naming the variable."""
    from learn_core.settings import ConfigError
    from trainers.jobs.scheduler import run_job

    monkeypatch.setenv("LEARNREC_BACKFILL_RAY_CPUS_PER_WORKER", "-1")
    for job in ("backfill", "retrain"):
        with pytest.raises(ConfigError, match="LEARNREC_BACKFILL_RAY_CPUS_PER_WORKER"):
            run_job(job)
    with pytest.raises(ConfigError, match="LEARNREC_BACKFILL_RAY_CPUS_PER_WORKER"):
        build_scheduler(SchedulerSettings(jobstore_path=tmp_path / "j.sqlite"), blocking=False)
