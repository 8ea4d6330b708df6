"""Late fusion of a content model with an ID model: cold items neutral, alpha from validation."""

from __future__ import annotations

import numpy as np
import pytest

from trainers.evaluation import eval_loop
from trainers.fusion import (
    ALPHAS,
    ContentToId,
    Fusion,
    fused_score_fn,
    neutral_cold,
    rank_matched_cold,
    select_cold_rule,
    select_fusion,
    with_mapped_cold,
)
from trainers.metrics import ranking_metrics
from trainers.splits import Split

N_USERS, N_ITEMS = 60, 40


def _split(seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    cold = np.zeros(N_ITEMS, dtype=bool)
    cold[-8:] = True
    warm = np.flatnonzero(~cold)
    train = [rng.choice(warm[:16], 5, replace=False) for _ in range(N_USERS)]
    valid = rng.choice(warm[16:], N_USERS)  # warm targets outside every history
    test = rng.choice(np.arange(N_ITEMS)[16:], N_USERS)
    return Split(
        item_ids=[f"i{k}" for k in range(N_ITEMS)],
        users=[f"u{k}" for k in range(N_USERS)],
        train=train,
        train_conv=[np.ones(len(t), dtype=np.int8) for t in train],
        valid=valid,
        test=test,
        cold=cold,
        n_events=np.full(N_USERS, 7),
    )


def _table_fn(table: np.ndarray):  # noqa: ANN202
    return lambda users, hists: table[users]


def test_neutral_cold_gives_cold_items_the_rows_warm_mean() -> None:
    scores = np.array([[1.0, 3.0, 100.0], [2.0, 4.0, -100.0]])
    cold = np.array([False, False, True])
    out = neutral_cold(scores, cold)
    np.testing.assert_allclose(out[:, 2], [2.0, 3.0])
    np.testing.assert_array_equal(out[:, :2], scores[:, :2])
    assert scores[0, 2] == 100.0  # the input is left alone


def test_alpha_zero_ranks_as_the_content_model_alone() -> None:
    split = _split()
    rng = np.random.default_rng(1)
    content, ids = rng.standard_normal((2, N_USERS, N_ITEMS))
    fused = fused_score_fn(_table_fn(content), _table_fn(ids), split.cold, Fusion(0.0, 2.0, 1.0))
    a = eval_loop(fused, split, "test")
    b = eval_loop(_table_fn(content), split, "test")
    np.testing.assert_array_equal(a, b)


def test_a_useful_id_model_gets_weight_and_a_useless_one_none() -> None:
    split = _split()
    rng = np.random.default_rng(2)
    content = rng.standard_normal((N_USERS, N_ITEMS))
    content[np.arange(N_USERS), split.valid] += 1.5  # content alone is fair
    ids = rng.standard_normal((N_USERS, N_ITEMS))
    ids[np.arange(N_USERS), split.valid] += 6.0  # the ID model knows the warm targets
    f = select_fusion(_table_fn(content), _table_fn(ids), split)
    assert f.alpha > 0 and set(f.valid_ndcg10) == set(ALPHAS)
    assert f.valid_ndcg10[f.alpha] > f.valid_ndcg10[0.0]
    fused = fused_score_fn(_table_fn(content), _table_fn(ids), split.cold, f)
    ranks = eval_loop(fused, split, "valid")
    assert ranking_metrics(ranks)["ndcg@10"] == pytest.approx(f.valid_ndcg10[f.alpha])

    noise = rng.standard_normal((N_USERS, N_ITEMS))
    content[np.arange(N_USERS), split.valid] += 10.0  # content alone is perfect
    g = select_fusion(_table_fn(content), _table_fn(noise), split)
    assert g.alpha == 0.0  # ties go to the smaller weight: noise never helps


def test_neutral_cold_items_rank_on_content_whatever_the_id_model_says() -> None:
    split = _split()
    content = np.zeros((N_USERS, N_ITEMS))
    content[:, -1] = 1.0  # the last (cold) item is every user's content favourite
    ids = np.zeros((N_USERS, N_ITEMS))
    ids[:, -1] = -1e6  # an untrained ID row must not bury it
    fused = fused_score_fn(
        _table_fn(content), _table_fn(ids), split.cold, Fusion(4.0, 1.0, 1.0, "neutral")
    )
    scores = fused(np.arange(N_USERS), [])
    assert (scores.argmax(1) == N_ITEMS - 1).all()


def test_rank_matched_cold_takes_the_warm_id_score_at_the_content_rank() -> None:
    cold = np.array([False, False, False, True, True, True])
    content = np.array([[0.1, 0.3, 0.2, 0.25, 0.05, 0.9]])
    ids = np.array([[1.0, 5.0, 3.0, 100.0, 100.0, -100.0]])
    out = rank_matched_cold(ids, content, cold)
    # 0.25 beats two warm items (2nd smallest warm ID), 0.05 none (smallest), 0.9 all
    np.testing.assert_allclose(out[0], [1.0, 5.0, 3.0, 3.0, 1.0, 5.0])
    assert ids[0, 3] == 100.0  # the input is left alone


def test_the_cold_rule_is_chosen_where_validation_has_cold_targets() -> None:
    split = _split()
    rng = np.random.default_rng(4)
    valid = split.valid.copy()
    cold_items = np.flatnonzero(split.cold)
    valid[:20] = rng.choice(cold_items, 20)  # a third of validation targets are cold
    split.valid = valid
    cold_users = split.cold[valid]
    rows = np.arange(N_USERS)
    content = rng.standard_normal((N_USERS, N_ITEMS))
    content[rows, valid] += 2.5  # content knows every target, warm or cold, fairly
    ids = rng.standard_normal((N_USERS, N_ITEMS))
    ids[rows[~cold_users], valid[~cold_users]] += 6.0  # the ID model knows warm targets well
    ids[:, split.cold] = -50.0  # and has nothing but untrained rows for cold items
    f, evidence = select_cold_rule(_table_fn(content), _table_fn(ids), split, cold_users)
    assert set(evidence) == {"mapped", "neutral", "rank"}
    assert f.cold_ids != "mapped" and f.alpha > 0
    best = max(e["ndcg@10"][e["alpha"]] for e in evidence.values())
    assert f.valid_ndcg10[f.alpha] == best
    # the untrained rows bury cold targets under any weight, so "mapped" keeps alpha 0
    assert evidence["mapped"]["alpha"] == 0.0
    assert evidence[f.cold_ids]["cold_hr@10"] > 0.5
    assert evidence[f.cold_ids]["warm_hr@10"] >= evidence["mapped"]["warm_hr@10"]


def test_a_flat_model_is_refused() -> None:
    split = _split()
    flat = _table_fn(np.ones((N_USERS, N_ITEMS)))
    with pytest.raises(ValueError, match="spread"):
        select_fusion(flat, flat, split)
    with pytest.raises(ValueError, match="cold_ids"):
        select_fusion(flat, flat, split, cold_ids="mean")


def test_content_to_id_recovers_a_linear_map_and_shrinks_noise() -> None:
    rng = np.random.default_rng(3)
    content = rng.standard_normal((300, 12))
    w = rng.standard_normal((12, 4))
    warm = np.ones(300, dtype=bool)
    warm[:30] = False
    exact = ContentToId.fit(content, content @ w + 1.0, warm)
    np.testing.assert_allclose(exact(content[:30]), content[:30] @ w + 1.0, atol=0.05)
    assert exact.l2 == min(exact.heldout_mse, key=exact.heldout_mse.get)
    noise = ContentToId.fit(content, rng.standard_normal((300, 4)), warm)
    assert noise.l2 == max(noise.heldout_mse)  # nothing to learn: the strongest penalty
    with pytest.raises(ValueError, match="too few"):
        ContentToId.fit(content, content @ w, np.arange(300) < 3)


def test_mapped_cold_rows_change_only_cold_scores() -> None:
    import torch

    from learn_core.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(N_ITEMS, 8, 1, 1, 10, 0.0)).eval()
    before = model.items.weight.detach().clone()
    cold = np.zeros(N_ITEMS, dtype=bool)
    cold[-5:] = True
    content = np.random.default_rng(4).standard_normal((N_ITEMS, 6)).astype(np.float32)
    mapped, mapping = with_mapped_cold(model, content, cold)
    assert torch.equal(model.items.weight, before)  # the trained model is left alone
    after = mapped.items.weight.detach()
    assert torch.equal(after[: N_ITEMS - 4], before[: N_ITEMS - 4])  # padding + warm rows
    np.testing.assert_allclose(after[-5:].numpy(), mapping(content[-5:]), rtol=1e-6)
    seq = torch.tensor([[0, 0, 3, 7, 2]])
    a, b = model.score_all(seq).detach(), mapped.score_all(seq).detach()
    assert torch.equal(a[:, ~torch.from_numpy(cold)], b[:, ~torch.from_numpy(cold)])
    assert not torch.equal(a[:, -5:], b[:, -5:])
