"""InfoNCE against a hand computation, including the masking of a user's own positives."""

from __future__ import annotations

import math

import torch

from trainers.learn_task import info_nce


def _hand(q, c, pos, negs, tau):
    s = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True)) / tau  # noqa: E731
    num = s(q, c[pos])
    den = math.exp(num) + sum(math.exp(s(q, c[j])) for j in negs)
    return -num + math.log(den)


def test_info_nce_matches_hand_computation_with_masking() -> None:
    tau = 0.5
    # two users, one query each (K=1), two target slots each (T=2); E=2
    q = [[1.0, 0.0], [0.0, 1.0]]
    c = [
        [0.6, 0.8],
        [1.0, 0.0],
        [0.0, 1.0],
        [0.8, 0.6],
    ]  # flat candidates: u0 t0, u0 t1, u1 t0, u1 t1
    cand_items = torch.tensor([[10, 11], [12, 10]])  # user 1's second target is item 10 ...
    user_items = torch.tensor([[5, 10, 11], [7, 12, 10]])  # ... which user 0 also has
    got = info_nce(
        torch.tensor(q)[:, None, :],
        torch.ones(2, 1, dtype=torch.bool),
        torch.tensor(c).reshape(2, 2, 2),
        torch.ones(2, 2, dtype=torch.bool),
        cand_items,
        user_items,
        tau,
    )
    # user 0: candidates 0,1 are own positives; candidate 3 is item 10, own -> masked; negative: 2
    # user 1: candidates 2,3 own; candidate 0 is item 10 (own) -> masked; negative: 1
    losses = [
        _hand(q[0], c, 0, [2], tau),
        _hand(q[0], c, 1, [2], tau),
        _hand(q[1], c, 2, [1], tau),
        _hand(q[1], c, 3, [1], tau),
    ]
    assert abs(float(got) - sum(losses) / 4) < 1e-5
    # Without masking, the result differs: the mask matters.
    unmasked = info_nce(
        torch.tensor(q)[:, None, :],
        torch.ones(2, 1, dtype=torch.bool),
        torch.tensor(c).reshape(2, 2, 2),
        torch.ones(2, 2, dtype=torch.bool),
        torch.tensor([[10, 11], [12, 13]]),
        torch.tensor([[10, 11], [12, 13]]),
        tau,
    )
    assert abs(float(unmasked) - float(got)) > 1e-3


def test_padding_and_invalid_queries_are_ignored() -> None:
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(2, 2, 4), dim=-1)
    c = torch.nn.functional.normalize(torch.randn(2, 3, 4), dim=-1)
    items = torch.tensor([[1, 2, -1], [3, 4, -1]])
    qv = torch.tensor([[True, False], [True, False]])
    cv = items >= 0
    full = info_nce(q, qv, c, cv, items, items, 0.1)
    trimmed = info_nce(q[:, :1], qv[:, :1], c[:, :2], cv[:, :2], items[:, :2], items[:, :2], 0.1)
    assert torch.allclose(full, trimmed, atol=1e-6)


def test_logq_correction_shifts_popular_items() -> None:
    q = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    c = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    items = torch.tensor([[0], [1]])
    ones_q, ones_c = torch.ones(2, 1, dtype=torch.bool), torch.ones(2, 1, dtype=torch.bool)
    base = info_nce(q, ones_q, c, ones_c, items, items, 1.0)
    # equal logQ everywhere changes nothing; unequal logQ changes the loss
    same = info_nce(q, ones_q, c, ones_c, items, items, 1.0, torch.full((2, 1), -2.0))
    skew = info_nce(q, ones_q, c, ones_c, items, items, 1.0, torch.tensor([[-0.1], [-5.0]]))
    assert torch.allclose(base, same)
    assert not torch.allclose(base, skew)
