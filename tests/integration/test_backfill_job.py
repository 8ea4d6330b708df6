"""The scheduler's backfill-only job also purges the versions retired past their grace."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from feature_repo.schema import ITEM_TOWER
from feature_repo.store import open_store
from learn_core.models import LearnConfig, LearnModel
from learn_core.registry import ModelRegistry
from tests.integration.conftest import cleanup, make_settings
from trainers.jobs.scheduler import run_job


def test_backfill_job_purges_retired_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings("embedded", tmp_path / "feast")
    for key, value in {
        "LEARNREC_FEAST_PROFILE": "embedded",
        "LEARNREC_FEAST_PROJECT": settings.project,
        "LEARNREC_FEAST_DATA_DIR": str(settings.resolved_data_dir()),
        "LEARNREC_REGISTRY_ROOT": str(tmp_path / "registry"),
        "LEARNREC_RETRAIN_RETIRE_GRACE_S": "0",
    }.items():
        monkeypatch.setenv(key, value)
    torch.manual_seed(0)
    registry = ModelRegistry(tmp_path / "registry")
    old = registry.save(LearnModel(LearnConfig()).eval(), content_model="test")
    registry.promote(old)
    new = registry.save(LearnModel(LearnConfig()).eval(), content_model="test")
    registry.promote(new)  # ``old`` is retired now, with a grace of 0 s
    assert set(registry.retired()) == {old}
    handle = open_store(settings)
    try:
        dim = LearnConfig().tower.out_dim
        rows = pd.DataFrame(
            {
                "item_id": ["i1"],
                "embedding": [np.ones(dim, np.float32)],
                "model_version": old,
                "event_timestamp": pd.Timestamp(datetime.now(UTC)),
            }
        )
        handle.append_offline(ITEM_TOWER.name, rows)  # where purge finds a version's ids
        handle.write_online(ITEM_TOWER.name, rows)
        (before,) = handle.online.read_vectors([(ITEM_TOWER.name, ["i1"])], old)
        assert before.ok.all()

        out = run_job("backfill")

        assert out["job"] == "backfill" and out["purged"] == [old]
        assert registry.retired() == {}
        (after,) = handle.online.read_vectors([(ITEM_TOWER.name, ["i1"])], old)
        assert not after.ok.any()
    finally:
        cleanup(handle)
