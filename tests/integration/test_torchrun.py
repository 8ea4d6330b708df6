"""Training under torchrun: 2 CPU processes (gloo) train what 1 process trains; a dead rank
fails the launch and nothing is saved.

Tiny synthetic data and a few steps, so the real ``torchrun`` launch is the cost (about
10 s each on 2 cores). Dropout is 0 here: with it, each rank draws the masks of its own
rows, so runs agree in distribution only (as any DDP run does).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_repo.settings import FeastSettings
from feature_repo.store import FeatureStoreHandle
from learn_core.datasets import synthetic
from learn_core.models.anchored import AnchoredConfig
from learn_core.registry import ModelRegistry
from tests.cli_child import run_learnrec
from tests.integration.conftest import cleanup, make_settings
from trainers.anchored import AnchoredTrainConfig
from trainers.distributed import (
    SINGLE,
    DistContext,
    DistributedTrainingFailed,
    run_torchrun,
    torchrun_command,
)
from trainers.learn import CVRStageConfig
from trainers.recipe import ANCHORED
from trainers.splits import Split, leave_one_out
from trainers.torchrun_fit import RESULT, SCRATCH, run_job, write_job

pytestmark = pytest.mark.integration

#: Measured on 2 cores (torch 2.15, gloo), after 12 Adam steps and the CVR stage: every
#: parameter within 1.1e-7, served item vectors within 6e-8 and user vectors within 8.4e-7,
#: the epoch's loss within 1e-7, validation figures identical. The bounds leave 10x or more.
PARAM_ATOL = 1e-5
VECTOR_ATOL = 1e-5
#: Except the attention's key bias: softmax ignores it (its true gradient is 0), so its
#: gradient is float noise that Adam scales up to steps of up to lr; 2.3e-4 measured, no
#: effect on any output (the vectors above).
KEY_BIAS_ATOL = 2e-3


def _data() -> tuple[Split, np.ndarray]:
    ds, topics = synthetic.generate(n_items=60, n_users=90, mean_events=12, seed=0)
    return leave_one_out(ds, cold_fraction=0.1, seed=0), synthetic.planted_content(topics, 16)


def _cfg(epochs: int) -> AnchoredTrainConfig:
    net = AnchoredConfig(d=16, max_len=8, dropout=0.0, whiten_dim=16, id_max_norm=None)
    # 90 users, all_chunks: 166 sequences, batches of 32: 6 steps an epoch, the last one
    # of 6 rows dealt 3 and 3; evaluated once, at the end (best state = last state)
    return AnchoredTrainConfig(
        net=net, all_chunks=True, batch_size=32, epochs=epochs, eval_every=epochs, patience=100
    )


def _job(root: Path, epochs: int) -> Path:
    split, content = _data()
    root.mkdir()
    write_job(
        root, split, content, split.item_ids, _cfg(epochs), CVRStageConfig(epochs=1),
        content_model="planted", pairing=ANCHORED.pairing,
    )  # fmt: skip
    return root


def _outputs(root: Path) -> tuple[dict, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    out = json.loads((root / RESULT).read_text())
    model = ModelRegistry(root / SCRATCH).load(out["version"]).model
    split, content = _data()
    tower = model.item_tower
    items = tower.encode_items(torch.from_numpy(content), item_ids=split.item_ids)
    keys = split.item_ids
    hist = torch.full((len(split.train), 8), -1, dtype=torch.long)
    for r, seq in enumerate(split.train):
        s = torch.from_numpy(seq[-8:])
        hist[r, : len(s)] = s
    with torch.no_grad():
        users = model.user_tower.encode_rows(torch.from_numpy(content), hist, keys)
    return out, model.state_dict(), items.detach(), users


def test_two_processes_train_what_one_process_trains(tmp_path: Path) -> None:
    one, two = _job(tmp_path / "one", 2), _job(tmp_path / "two", 2)
    run_job(one, SINGLE)  # what `nproc 1` runs: the loop in this process
    run_torchrun(2, ["fit-job", str(two)], timeout_s=300)

    out1, p1, items1, users1 = _outputs(one)
    out2, p2, items2, users2 = _outputs(two)
    assert out1["world"] == 1 and out2["world"] == 2
    assert out1["best_epoch"] == out2["best_epoch"] == 1
    # the epoch's mean loss is the same number: every batch is the same, in the same order
    loss1, loss2 = out1["history"][-1]["loss"], out2["history"][-1]["loss"]
    assert abs(loss1 - loss2) < 1e-5, (loss1, loss2)
    assert set(p1) == set(p2)
    for name in p1:
        diff = (p1[name] - p2[name]).abs()
        if name.endswith("attn.in_proj_bias"):  # [query | key | value] biases
            d = diff.numel() // 3
            assert float(diff[d : 2 * d].max()) < KEY_BIAS_ATOL, name
            diff = torch.cat([diff[:d], diff[2 * d :]])
        assert float(diff.max()) < PARAM_ATOL, (name, float(diff.max()))
    torch.testing.assert_close(items2, items1, atol=VECTOR_ATOL, rtol=0)
    torch.testing.assert_close(users2, users1, atol=VECTOR_ATOL, rtol=0)
    # and training moved the model: the comparison is not between two initialisations
    from trainers.anchored import build_model

    split, content = _data()
    torch.manual_seed(0)
    init, _, _ = build_model(_cfg(2), content, split.train_counts(), split.item_ids)
    moved = init.state_dict()["item_tower.anchor.weight"] - p1["item_tower.anchor.weight"]
    assert float(moved.abs().max()) > 1000 * PARAM_ATOL


def test_a_last_batch_smaller_than_the_world_leaves_a_rank_a_zero_weight_row() -> None:
    idx = torch.tensor([7])
    assert DistContext(0, 2).shard(idx) == (idx, True)
    rows, live = DistContext(1, 2).shard(idx)
    assert rows.tolist() == [7] and not live  # a stand-in row, weighted 0
    rows, live = DistContext(1, 2).shard(torch.arange(5))
    assert rows.tolist() == [1, 3] and live
    assert torchrun_command(2, ["x"])[-5:] == ["--nproc_per_node", "2", "-m", "trainers", "x"]


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in env:
        if entry.startswith(b"RANK="):
            return entry[5:].decode()
    return None


def _kill_rank_when_training(
    parent: int, rank: str, stop: threading.Event, killed: list[int]
) -> None:
    """SIGKILL the worker of ``rank`` once it has run 6 s (import, join, train)."""
    seen: dict[int, float] = {}
    while not stop.is_set():
        for pid in _descendants(parent):
            if _rank_of(pid) == rank:
                seen.setdefault(pid, time.monotonic())
                if time.monotonic() - seen[pid] > 6:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
        time.sleep(0.2)


def test_learnrec_train_nproc_2_saves_one_version_from_rank_0(tmp_path: Path) -> None:
    """``learnrec train --nproc 2`` on a tiny config: one version, its manifest, exit 0."""
    reg = tmp_path / "reg"
    proc = run_learnrec(
        "train", "--nproc", "2", "--epochs", "1", "--registry", str(reg),
        timeout=400, LEARNREC_TRAIN_CVR_EPOCHS="1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1 of 2 (gloo)" in proc.stderr
    versions = ModelRegistry(reg).versions()
    assert len(versions) == 1
    manifest = ModelRegistry(reg).manifest(versions[0])
    assert manifest["extra"]["recipe"]["name"] == ANCHORED.name
    assert manifest["extra"]["train_processes"] == 2
    assert json.loads(proc.stdout)["version"] == versions[0]  # printed once, by rank 0


def test_retrain_nproc_refuses_a_towers_recipe_naming_the_setting() -> None:
    from learn_core.settings import ConfigError, load
    from trainers.jobs.retrain import RetrainSettings

    assert load(RetrainSettings, nproc=2).nproc == 2  # the product's recipe: anchored
    with pytest.raises(ConfigError, match="LEARNREC_RETRAIN_NPROC=2: recipe 'content-sliding'"):
        load(RetrainSettings, nproc=2, recipe="content-sliding")


def store_with_log(settings: FeastSettings) -> FeatureStoreHandle:
    """An embedded store holding the synthetic catalogue's content and interaction log."""
    import pandas as pd

    from feature_repo.schema import INTERACTION_LOG, ITEM_CONTENT
    from feature_repo.store import open_store

    ds, topics = synthetic.generate(n_items=60, n_users=90, mean_events=12, seed=0)
    content = synthetic.planted_content(topics, dim=16).astype(np.float32)
    handle = open_store(settings)
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    items = pd.DataFrame(
        {"item_id": ds.item_ids, "embedding": list(content), "model_version": "planted",
         "event_timestamp": t0, "created": t0}
    )  # fmt: skip
    handle.append_offline(ITEM_CONTENT.name, items)
    handle.write_online(ITEM_CONTENT.name, items.drop(columns=["created"]))
    df = ds.interactions
    at = pd.to_datetime(df["occurred_at"], utc=True)
    log_df = pd.DataFrame(
        {"event_id": [f"e{i}" for i in range(len(df))], "user_id": df["user_id"],
         "item_id": df["item_id"], "event_type": df["event_type"],
         "value": df["value"].astype(float), "event_timestamp": at, "created": at}
    )  # fmt: skip
    handle.append_offline(INTERACTION_LOG.name, log_df)
    return handle


def test_retrain_with_a_dying_rank_saves_nothing_then_nproc_2_promotes(tmp_path: Path) -> None:
    from trainers.jobs.retrain import RetrainSettings, retrain

    handle = store_with_log(make_settings("embedded", tmp_path / "feast"))
    registry = ModelRegistry(tmp_path / "registry")
    settings = {"nproc": 2, "history_len": 8, "catchup_delay_s": 0.1}
    try:
        stop, killed = threading.Event(), []
        killer = threading.Thread(
            target=_kill_rank_when_training, args=(os.getpid(), "1", stop, killed), daemon=True
        )
        killer.start()
        try:
            with pytest.raises(DistributedTrainingFailed):
                retrain(
                    handle,
                    registry,
                    RetrainSettings(epochs=1000, patience=100, **settings),
                    force=True,
                )
        finally:
            stop.set()
        assert killed
        assert registry.versions() == [] and registry.current_version() is None

        report = retrain(handle, registry, RetrainSettings(epochs=2, **settings), force=True)
        assert report is not None and report.promoted
        assert registry.versions() == [report.version] == [registry.current_version()]
        assert report.backfill["items"] == 60 and report.backfill["users"] == 90
        assert registry.manifest(report.version)["extra"]["train_processes"] == 2
    finally:
        cleanup(handle)
