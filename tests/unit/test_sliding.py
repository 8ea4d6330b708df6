"""The sliding pairing: every history position against the items that follow it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learn_core.models import (
    CVRConfig,
    FrozenContent,
    LearnConfig,
    LearnModel,
    TowerConfig,
)
from tests.unit.planted import learn_and_popularity, planted
from trainers.learn import (
    LearnTrainConfig,
    make_sliding_windows,
    make_windows,
    train_learn,
)
from trainers.learn_task import LearnTaskConfig, LearnTrainTask, log_inclusion


def _brute_force(task: LearnTrainTask, batch: dict[str, torch.Tensor], logq: bool) -> float:
    """Per (query, positive) pair, written out with Python loops over the chunk slots."""
    hist, tail = batch["chunk"], batch["tail"]
    full = torch.cat([hist, tail], 1)
    b, h = hist.shape
    t = full.shape[1] - h
    tau = float(task.temperature)
    with torch.no_grad():
        states = task.model.user_tower(task.inputs(hist), hist >= 0)
        present = sorted({int(x) for x in full.flatten() if x >= 0})
        emb = {i: task.model.item_tower.embed(task.inputs(torch.tensor([i])))[0] for i in present}
    draws = int((full >= 0).sum())
    qweight = batch.get("qweight", torch.ones(b, h))
    corr = {i: 0.0 for i in present}
    if logq:
        corr = {i: float(log_inclusion(task.log_q[i : i + 1], draws)[0]) for i in present}
    losses = []
    for r in range(b):
        own = {int(x) for x in full[r] if x >= 0}
        for i in range(h):
            if hist[r, i] < 0:
                continue
            for j in range(1, t + 1):
                if i + j >= full.shape[1] or full[r, i + j] < 0:
                    continue
                p = int(full[r, i + j])

                def s(item: int, r: int = r, i: int = i) -> float:
                    return float(states[r, i] @ emb[item]) / tau - corr[item]

                den = math.exp(s(p)) + sum(math.exp(s(n)) for n in present if n not in own)
                losses.append((float(qweight[r, i]), -s(p) + math.log(den)))
    return sum(w * x for w, x in losses) / sum(w for w, _ in losses)


@pytest.mark.parametrize("variant", [2, 3])
@pytest.mark.parametrize("logq", [False, True])
def test_sliding_loss_matches_brute_force(variant: int, logq: bool) -> None:
    torch.manual_seed(0)
    tower = TowerConfig(
        content_dim=8, d_model=8, n_layers=1, n_heads=2, max_len=8, out_dim=8, item_variant=variant
    )
    model = LearnModel(LearnConfig(tower, CVRConfig(in_dim=8)))
    inputs = FrozenContent(torch.randn(12, 8))
    task = LearnTrainTask(model, inputs, LearnTaskConfig(temperature=0.5, logq_correction=logq))
    task.set_item_counts(torch.arange(1, 13))
    # user 1 shares item 4 with user 0 (masked for neither: it is own to both); row 2 is short
    batch = {
        "chunk": torch.tensor([[0, 1, 2, 3], [5, 4, 6, 7], [8, 9, -1, -1]]),
        "tail": torch.tensor([[4, 10], [11, -1], [-1, -1]]),
        "conv": torch.zeros(3, 6, dtype=torch.bool),
    }
    task.eval()
    with torch.no_grad():
        got = float(task(batch))
    assert abs(got - _brute_force(task, batch, logq)) < 1e-4
    # recency weights: each query's pairs count in proportion to its weight
    batch["qweight"] = torch.tensor(
        [[0.125, 0.25, 0.5, 1.0], [0.25, 0.5, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    )
    with torch.no_grad():
        weighted = float(task(batch))
    assert abs(weighted - _brute_force(task, batch, logq)) < 1e-4
    assert abs(weighted - got) > 1e-4


def test_sliding_recency_weights_by_age() -> None:
    split, _ = planted(50, 20, 25, seed=3, dim=8)
    cfg = LearnTrainConfig(history_len=6, target_len=2, pairing="sliding", recency_decay=0.5)
    w = make_sliding_windows(split, cfg, np.random.default_rng(0))
    assert "qweight" not in make_sliding_windows(
        split, LearnTrainConfig(history_len=6, target_len=2), np.random.default_rng(0)
    )
    full = np.concatenate([w["chunk"], w["tail"]], 1)
    for row, weights in zip(full, w["qweight"], strict=True):
        n_q = min(6, int((row >= 0).sum()) - 1)  # positions that have a next item
        expect = np.zeros(6)
        expect[:n_q] = 0.5 ** np.arange(n_q - 1, -1, -1)
        np.testing.assert_allclose(weights, expect)


@pytest.mark.parametrize("decay", [0.0, 1.5])
def test_recency_decay_out_of_range_is_refused(decay: float) -> None:
    split, inputs = planted(30, 10, 10, seed=4, dim=8)
    cfg = LearnTrainConfig(
        model=LearnConfig(TowerConfig(content_dim=8, d_model=8, max_len=8, item_variant=2)),
        history_len=6,
        pairing="sliding",
        recency_decay=decay,
    )
    with pytest.raises(ValueError, match="recency_decay"):
        train_learn(cfg, split, inputs)


def test_sliding_windows_cover_the_newest_items() -> None:
    split, _ = planted(50, 20, 25, seed=3, dim=8)
    cfg = LearnTrainConfig(history_len=6, target_len=2, pairing="sliding")
    w = make_sliding_windows(split, cfg, np.random.default_rng(0))
    assert w["chunk"].shape[1] == 6 and w["tail"].shape[1] == 2 and w["conv"].shape[1] == 8
    full = np.concatenate([w["chunk"], w["tail"]], 1)
    rows = {tuple(r[r >= 0]) for r in full}
    for seq in split.train:
        if len(seq) >= 2:
            assert tuple(seq[-8:]) in rows  # every user's newest chunk is trained on


def test_sliding_chunk_stride_sets_the_chunks_per_user() -> None:
    split, _ = planted(50, 20, 25, seed=3, dim=8)

    def per_user(**kw: int) -> int:
        cfg = LearnTrainConfig(history_len=6, target_len=2, pairing="sliding", **kw)
        return len(make_sliding_windows(split, cfg, np.random.default_rng(0))["chunk"])

    users = [len(s) for s in split.train if len(s) >= 2]
    assert per_user() == sum(min(24, -(-n // 6)) for n in users)  # the default: stride H
    assert per_user(chunk_stride=6) == per_user()
    assert per_user(chunk_stride=2) == sum(min(24, -(-n // 2)) for n in users)


def test_chunk_stride_below_one_is_refused() -> None:
    split, inputs = planted(30, 10, 10, seed=4, dim=8)
    cfg = LearnTrainConfig(
        model=LearnConfig(TowerConfig(content_dim=8, d_model=8, max_len=8, item_variant=2)),
        history_len=6,
        pairing="sliding",
        chunk_stride=0,
    )
    with pytest.raises(ValueError, match="chunk_stride"):
        train_learn(cfg, split, inputs)


def test_sliding_refuses_item_variant_1() -> None:
    split, inputs = planted(30, 10, 10, seed=4, dim=8)
    cfg = LearnTrainConfig(
        model=LearnConfig(TowerConfig(content_dim=8, d_model=8, max_len=8, item_variant=1)),
        history_len=6,
        pairing="sliding",
    )
    with pytest.raises(ValueError, match="item_variant"):
        train_learn(cfg, split, inputs)
    cfg.pairing = "zigzag"
    with pytest.raises(ValueError, match="pairing"):
        train_learn(cfg, split, inputs)


def test_sliding_learns_planted_topics() -> None:
    torch.set_num_threads(2)
    split, inputs = planted(200, 150, 30, seed=1, dim=32)
    cfg = LearnTrainConfig(
        model=LearnConfig(
            TowerConfig(content_dim=32, d_model=32, n_layers=1, max_len=32, item_variant=2)
        ),
        pairing="sliding",
        history_len=20,
        target_len=1,
        batch_size=32,
        epochs=8,
        lr=3e-3,
    )
    seen: list[tuple[int, float]] = []
    res = train_learn(
        cfg,
        split,
        inputs,
        on_valid=lambda e, r: seen.append((e, float((r[~np.isnan(r)] < 10).mean()))),
    )
    # the hook sees every epoch's validation ranks, the ones the selection used
    assert [e for e, _ in seen] == [h["epoch"] for h in res.history]
    assert [hr for _, hr in seen] == pytest.approx([h["valid_hr@10"] for h in res.history])
    learn, popm = learn_and_popularity(res.model, inputs, split, 20)
    assert learn["all"]["hr@10"] > 2.0 * popm["all"]["hr@10"], (learn["all"], popm["all"])
    assert learn["cold"]["n"] > 0 and learn["cold"]["hr@10"] > 0.5 * learn["warm"]["hr@10"]


def test_sliding_joint_cvr_trains_the_head() -> None:
    torch.manual_seed(0)
    tower = TowerConfig(content_dim=8, d_model=8, n_layers=1, max_len=8, out_dim=8, item_variant=2)
    model = LearnModel(LearnConfig(tower, CVRConfig(in_dim=8)))
    inputs = FrozenContent(torch.randn(12, 8))
    batch = {
        "chunk": torch.tensor([[0, 1, 2, 3], [5, 4, 6, 7]]),
        "tail": torch.tensor([[4], [11]]),
        "conv": torch.tensor([[0, 1, 0, 1, 1], [1, 0, 0, 1, 0]], dtype=torch.bool),
    }
    plain = LearnTrainTask(model, inputs, LearnTaskConfig(cvr_weight=0.0))(batch)
    joint = LearnTrainTask(model, inputs, LearnTaskConfig(cvr_weight=0.5))(batch)
    assert torch.isfinite(joint) and float(joint.detach()) > float(plain.detach())  # + BCE
    joint.backward()
    assert model.cvr_head.out.weight.grad is not None
    assert float(model.cvr_head.out.weight.grad.abs().sum()) > 0


def test_window_recency_samples_the_newest_positions() -> None:
    split, _ = planted(50, 20, 25, seed=3, dim=8)
    cfg = LearnTrainConfig(history_len=10, target_len=2, queries=3, recency_decay=1e-6)
    w = make_windows(split, cfg, np.random.default_rng(0))
    for hist, qpos in zip(w["hist"], w["qpos"], strict=True):
        last = int((hist >= 0).sum()) - 1
        got = sorted(int(q) for q in qpos if q >= 0)
        # the newest position always; with a near-zero decay the others are the next newest
        assert got == list(range(max(0, last - 2), last + 1))
