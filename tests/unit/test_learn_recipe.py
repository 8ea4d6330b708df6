"""The stronger LEARN recipe's pieces: catalogue softmax and hybrid (content + ID) item inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learn_core.models import (
    CVRConfig,
    FrozenContent,
    HybridItemInputs,
    LearnConfig,
    LearnModel,
    TowerConfig,
)
from tests.unit.planted import learn_and_popularity, planted
from trainers.learn import LearnTrainConfig, train_learn
from trainers.learn_task import LearnTaskConfig, LearnTrainTask


def _tower(content_dim: int, variant: int = 2) -> TowerConfig:
    return TowerConfig(
        content_dim=content_dim,
        d_model=8,
        n_layers=1,
        n_heads=2,
        max_len=8,
        out_dim=8,
        item_variant=variant,
    )


def _catalogue_brute_force(task: LearnTrainTask, batch: dict[str, torch.Tensor]) -> float:
    """Per (position, next item): -log softmax over every trained item not the user's own."""
    hist, tail = batch["chunk"], batch["tail"]
    full = torch.cat([hist, tail], 1)
    n_items = len(task.trained)
    tau = float(task.temperature)
    with torch.no_grad():
        states = task.model.user_tower(task.inputs(hist), hist >= 0)
        emb = task.model.item_tower.embed(task.inputs(torch.arange(n_items)))
    losses = []
    for r in range(hist.shape[0]):
        own = {int(x) for x in full[r] if x >= 0}
        for i in range(hist.shape[1]):
            if hist[r, i] < 0 or full[r, i + 1] < 0:
                continue
            p = int(full[r, i + 1])
            logit = [float(states[r, i] @ emb[n]) / tau for n in range(n_items)]
            negs = [n for n in range(n_items) if n not in own and bool(task.trained[n])]
            den = math.exp(logit[p]) + sum(math.exp(logit[n]) for n in negs)
            losses.append(-logit[p] + math.log(den))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("variant", [2, 3])
def test_catalogue_softmax_matches_brute_force(variant: int) -> None:
    torch.manual_seed(0)
    model = LearnModel(LearnConfig(_tower(8, variant), CVRConfig(in_dim=8)))
    task = LearnTrainTask(
        model,
        FrozenContent(torch.randn(14, 8)),
        LearnTaskConfig(temperature=0.5, negatives="catalogue"),
    )
    counts = torch.arange(1, 15)
    counts[[12, 13]] = 0  # two held-out (cold) items: never negatives
    task.set_item_counts(counts)
    batch = {
        "chunk": torch.tensor([[0, 1, 2, 3], [5, 4, 6, 7], [8, 9, -1, -1]]),
        "tail": torch.tensor([[4], [11], [-1]]),
        "conv": torch.zeros(3, 5, dtype=torch.bool),
    }
    task.eval()
    with torch.no_grad():
        got = float(task(batch))
    assert abs(got - _catalogue_brute_force(task, batch)) < 1e-4
    # the in-batch softmax (items 10 and 12-13 absent) is a different loss on the same batch
    task.cfg = LearnTaskConfig(temperature=0.5, logq_correction=False)
    with torch.no_grad():
        assert abs(float(task(batch)) - got) > 1e-3


def test_catalogue_needs_sliding_and_a_known_value() -> None:
    with pytest.raises(ValueError, match="negatives"):
        LearnTaskConfig(negatives="sampled")
    split, inputs = planted(20, 10, 12, seed=0, dim=8)
    cfg = LearnTrainConfig(
        model=LearnConfig(_tower(8, 2), CVRConfig(in_dim=8)),
        task=LearnTaskConfig(negatives="catalogue"),
        pairing="window",
        history_len=6,
        epochs=1,
    )
    with pytest.raises(ValueError, match="catalogue"):
        train_learn(cfg, split, inputs)


def test_hybrid_inputs_shapes_and_cold_items_have_no_id() -> None:
    torch.manual_seed(0)
    content = torch.randn(6, 5)
    warm = torch.tensor([True, True, True, True, False, False])
    hyb = HybridItemInputs(content, warm, id_dim=3, id_dropout=0.0)
    assert hyb.dim == 8 and hyb.matrix.shape == (6, 8)
    out = hyb(torch.tensor([[0, 4, -1]]))
    assert out.shape == (1, 3, 8)
    assert torch.equal(out[0, :, :5], content[[0, 4, 0]])
    assert out[0, 0, 5:].abs().sum() > 0 and torch.all(out[0, 1, 5:] == 0)
    assert torch.equal(hyb.matrix[:, :5], content) and torch.all(hyb.matrix[4:, 5:] == 0)
    # dropout only in training, never at inference
    hyb.id_dropout = 0.5
    hyb.eval()
    assert torch.equal(hyb(torch.arange(4)), hyb.matrix[:4])
    hyb.train()
    dropped = (hyb(torch.arange(4).repeat(200))[:, 5:].abs().sum(1) == 0).float().mean()
    assert 0.35 < float(dropped) < 0.65
    with pytest.raises(ValueError, match="id_dropout"):
        HybridItemInputs(content, warm, id_dropout=1.5)


def test_hybrid_with_id_dropout_1_is_the_pure_content_tower() -> None:
    """ID dropout 1: the hybrid model equals a content-only model with the same content weights."""
    torch.manual_seed(0)
    content = torch.randn(10, 6)
    warm = torch.ones(10, dtype=torch.bool)
    warm[7:] = False
    hybrid = LearnModel(LearnConfig(_tower(6 + 4), CVRConfig(in_dim=8)))
    plain = LearnModel(LearnConfig(_tower(6), CVRConfig(in_dim=8)))
    state = hybrid.state_dict()
    for key in ("user_tower.adaptor.weight", "item_tower.shared.adaptor.weight"):
        state[key] = state[key][:, :6]
    plain.load_state_dict(state)
    hybrid.eval()
    plain.eval()
    hyb = HybridItemInputs(content, warm, id_dim=4, id_dropout=1.0).train()
    seq = torch.tensor([[0, 3, 8, 5]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        want = plain.user_tower(content[seq], valid)
        assert torch.allclose(hybrid.user_tower(hyb(seq), valid), want, atol=1e-6)
        want_items = plain.item_tower.encode_items(content)
        assert torch.allclose(hybrid.item_tower.embed(hyb(torch.arange(10))), want_items, atol=1e-6)
        # at inference: cold items (no ID) still equal the content model, warm ones do not
        hyb.eval()
        items = hybrid.item_tower.encode_items(hyb.matrix)
    assert torch.allclose(items[7:], want_items[7:], atol=1e-6)
    assert not torch.allclose(items[:7], want_items[:7], atol=1e-3)


def test_hybrid_catalogue_recipe_learns_planted_topics_and_reaches_cold_items() -> None:
    torch.set_num_threads(2)
    split, content = planted(200, 150, 30, seed=1, dim=32)
    inputs = HybridItemInputs(content.matrix, torch.from_numpy(~split.cold), 16, 0.5)
    cfg = LearnTrainConfig(
        model=LearnConfig(
            TowerConfig(content_dim=48, d_model=32, n_layers=1, max_len=32, item_variant=2)
        ),
        task=LearnTaskConfig(negatives="catalogue"),
        pairing="sliding",
        history_len=20,
        target_len=1,
        batch_size=32,
        epochs=8,
        lr=3e-3,
    )
    res = train_learn(cfg, split, inputs)
    learn, popm = learn_and_popularity(res.model, inputs, split, 20)
    assert learn["all"]["hr@10"] > 2.0 * popm["all"]["hr@10"], (learn["all"], popm["all"])
    assert learn["cold"]["n"] > 0 and learn["cold"]["hr@10"] > 0.5 * learn["warm"]["hr@10"]
    assert np.isfinite(res.valid["hr@10"])
