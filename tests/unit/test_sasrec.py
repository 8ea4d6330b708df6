"""SASRec: causal, padding-safe, and it learns a deterministic next-item pattern."""

from __future__ import annotations

import numpy as np
import torch

from learn_core.models import SASRec, SASRecConfig
from trainers.evaluation import eval_loop
from trainers.metrics import ranking_metrics
from trainers.sasrec import SASRecTrainConfig, _left_pad, sasrec_score_fn, train_sasrec
from trainers.splits import Split


def test_causal_and_shapes() -> None:
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(n_items=20, d=8, max_len=10)).eval()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6]])
    h = m(seq)
    assert h.shape == (1, 6, 8)
    seq2 = seq.clone()
    seq2[0, 5] = 9
    assert torch.allclose(m(seq2)[0, :5], h[0, :5], atol=1e-6)
    assert m.score_all(seq).shape == (1, 20)


def test_left_pad() -> None:
    out = _left_pad([np.array([4, 5]), np.array([1, 2, 3])], 3)
    assert out.tolist() == [[0, 5, 6], [2, 3, 4]]


def cycle_split(n_items: int = 30, n_users: int = 60) -> Split:
    """Users walk a fixed cycle of items from a random start: 20 train steps, then valid, test."""
    rng = np.random.default_rng(0)
    train, valid, test = [], [], []
    for _ in range(n_users):
        seq = (int(rng.integers(n_items)) + np.arange(22)) % n_items
        train.append(seq[:20])
        valid.append(seq[20])
        test.append(seq[21])
    return Split(
        item_ids=[str(i) for i in range(n_items)],
        users=[str(u) for u in range(n_users)],
        train=train,
        train_conv=[np.zeros(20, bool)] * n_users,
        valid=np.array(valid),
        test=np.array(test),
        cold=np.zeros(n_items, bool),
        n_events=np.full(n_users, 22),
    )


def test_learns_a_cycle() -> None:
    """Users walk a fixed cycle of 30 items; SASRec should predict the next step."""
    split = cycle_split()
    cfg = SASRecTrainConfig(d=16, max_len=20, epochs=40, eval_every=10, dropout=0.0, lr=5e-3)
    res = train_sasrec(cfg, split)
    hr = ranking_metrics(eval_loop(sasrec_score_fn(res.model, 20), split, "test"))["hr@10"]
    assert hr > 0.8


def test_ce_loss_equals_hand_computed_log_softmax() -> None:
    """Full-softmax CE over the allowed items, padding positions skipped, by hand."""
    import math

    from trainers.sasrec import sasrec_ce_loss

    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # row 0 = pad
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    pos = torch.tensor([[2, 1, 0]])  # next items: 1, 0, padding
    # position 0: logits [1, 0, 1], target item 1; position 1: logits [0, 2, 1], target 0
    every = torch.tensor([True, True, True])
    want = (-(0 - math.log(math.e + 1 + math.e)) - (0 - math.log(1 + math.e**2 + math.e))) / 2
    assert math.isclose(float(sasrec_ce_loss(h, pos, items, every)), want, rel_tol=1e-6)
    # item 2 (a held-out cold item) is no negative: it leaves both softmaxes
    no_cold = torch.tensor([True, True, False])
    want = (-(0 - math.log(math.e + 1)) - (0 - math.log(1 + math.e**2))) / 2
    assert math.isclose(float(sasrec_ce_loss(h, pos, items, no_cold)), want, rel_tol=1e-6)


def test_ce_recipe_learns_a_cycle_and_bad_loss_is_refused() -> None:
    import pytest

    split = cycle_split()
    cfg = SASRecTrainConfig(
        d=16, max_len=20, epochs=20, eval_every=10, dropout=0.0, lr=5e-3, loss="ce"
    )
    res = train_sasrec(cfg, split)
    hr = ranking_metrics(eval_loop(sasrec_score_fn(res.model, 20), split, "test"))["hr@10"]
    assert hr > 0.8
    with pytest.raises(ValueError, match="loss"):
        SASRecTrainConfig(loss="bpr")
