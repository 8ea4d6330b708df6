"""The registry records which version a switch replaced, for the purge of its online rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import torch

from learn_core.models.learn import LearnConfig, LearnModel
from learn_core.models.towers import TowerConfig
from learn_core.registry import ModelRegistry


def test_promote_records_the_replaced_version_and_a_rollback_unretires(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LearnModel(
        LearnConfig(tower=TowerConfig(content_dim=16, d_model=16, n_heads=2, max_len=8))
    )
    reg = ModelRegistry(tmp_path)
    a = reg.save(model, content_model="mini")
    b = reg.save(model, content_model="mini")
    reg.promote(a)
    assert reg.retired() == {}  # nothing was serving
    t0 = datetime.now(UTC)
    reg.promote(b)
    assert reg.current_version() == b
    assert list(reg.retired()) == [a] and t0 <= reg.retired()[a] <= datetime.now(UTC)
    reg.promote(b)  # promoting the serving version again retires nothing
    assert list(reg.retired()) == [a]
    reg.promote(a)  # a rollback: a serves again, b waits for its purge
    assert list(reg.retired()) == [b]
    reg.forget_retired([b])
    assert reg.retired() == {}
