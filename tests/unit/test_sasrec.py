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


def test_learns_a_cycle() -> None:
    """Users walk a fixed cycle of 30 items; SASRec should predict the next step."""
    n_items, rng = 30, np.random.default_rng(0)
    train, valid, test = [], [], []
    for _ in range(60):
        start = int(rng.integers(n_items))
        seq = (start + np.arange(22)) % n_items
        train.append(seq[:20])
        valid.append(seq[20])
        test.append(seq[21])
    split = Split(
        item_ids=[str(i) for i in range(n_items)],
        users=[str(u) for u in range(60)],
        train=train,
        train_conv=[np.zeros(20, bool)] * 60,
        valid=np.array(valid),
        test=np.array(test),
        cold=np.zeros(n_items, bool),
        n_events=np.full(60, 22),
    )
    cfg = SASRecTrainConfig(d=16, max_len=20, epochs=40, eval_every=10, dropout=0.0, lr=5e-3)
    res = train_sasrec(cfg, split)
    hr = ranking_metrics(eval_loop(sasrec_score_fn(res.model, 20), split, "test"))["hr@10"]
    assert hr > 0.8
