"""The content-anchored hybrid: its item vectors, windows, training, saving and serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from learn_core.contract import ServingConfig
from learn_core.models.anchored import (
    AnchoredConfig,
    AnchoredModel,
    AnchoredModelConfig,
    IdVocab,
    left_align_right,
)
from learn_core.models.cvr import CVRConfig
from learn_core.registry import ModelRegistry, RegistryError
from learn_core.serving import as_serving
from tests.unit.planted import planted
from trainers.anchored import AnchoredTrainConfig, anchored_score_fn, id_rows_for, train_anchored
from trainers.evaluation import eval_loop, served_score_fn, summarise
from trainers.learn import CVRStageConfig
from trainers.train import serving_contract


def _model(n_ids: int = 4, **net) -> AnchoredModel:
    torch.manual_seed(0)
    cfg = AnchoredConfig(content_dim=12, d=8, max_len=6, whiten_dim=10, n_ids=n_ids, **net)
    head = CVRConfig(in_dim=cfg.out_dim, hidden=8, mid_dim=4)
    model = AnchoredModel(AnchoredModelConfig(cfg, head))
    model.item_tower.fit_whitening(torch.randn(40, 12))
    model.item_tower.vocab = IdVocab([f"i{r}" for r in range(n_ids)])
    with torch.no_grad():
        model.item_tower.ids.normal_(0, 2.0)
    return model.eval()


def test_left_align_right_packs_each_window_newest_last() -> None:
    ids = torch.tensor([[3, 4, -1, -1], [-1, 5, -1, 6], [1, 2, 3, 4]])
    assert left_align_right(ids, 3).tolist() == [[-1, 3, 4], [-1, 5, 6], [2, 3, 4]]


def test_item_vectors_are_content_plus_a_bounded_correction_for_known_ids() -> None:
    model = _model(id_max_norm=0.5)
    tower = model.item_tower
    content = torch.randn(3, 12)
    plain = tower.encode_items(content)  # no ids: content alone
    named = tower.encode_items(content, item_ids=["i1", "new-item", "i3"])
    assert torch.equal(named[1], plain[1])  # an item the model never saw: its content
    delta = (named - plain)[[0, 2]].norm(dim=1)
    assert (delta > 0.1).all() and (delta <= 0.5 + 1e-5).all()  # the bound holds
    with pytest.raises(ValueError, match="2 item ids for 3 content rows"):
        tower.encode_items(content, item_ids=["i1", "i2"])


def test_padding_and_layout_do_not_change_a_users_vector() -> None:
    model = _model()
    matrix = torch.randn(5, 12)
    keys = ["i0", "i1", "x", "i3", "y"]
    left_aligned = torch.tensor([[0, 1, 2, -1, -1, -1], [3, 4, -1, -1, -1, -1]])
    right_aligned = torch.tensor([[-1, 0, 1, 2], [-1, -1, 3, 4]])
    a = model.user_tower.encode_rows(matrix, left_aligned, keys)
    b = model.user_tower.encode_rows(matrix, right_aligned, keys)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # a window longer than the positions keeps its newest items
    long = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    newest = torch.tensor([[2, 3, 4, 0, 1, 2]])
    torch.testing.assert_close(
        model.user_tower.encode_rows(matrix, long, keys),
        model.user_tower.encode_rows(matrix, newest, keys),
    )


def test_whitening_drops_directions_the_catalogue_does_not_span() -> None:
    """Five items in 12 dimensions span at most 4 directions: a new item's vector stays
    on the catalogue's scale instead of its rounding noise being scaled up by ~1e4."""
    torch.manual_seed(0)
    cfg = AnchoredConfig(content_dim=12, d=8, max_len=6, whiten_dim=10, n_ids=0)
    model = AnchoredModel(AnchoredModelConfig(cfg, CVRConfig(in_dim=cfg.out_dim)))
    known = torch.randn(5, 12)
    model.item_tower.fit_whitening(known)
    assert int((model.item_tower.basis.abs().sum(0) > 0).sum()) == 4
    new = model.item_tower.whiten(torch.randn(3, 12))
    assert torch.isfinite(new).all() and new.abs().max() < 100


def test_a_content_model_narrower_than_the_whitening_trains() -> None:
    """whiten_dim (256 by default) is capped at the content model's width."""
    split, inputs = planted(20, 30, 8, seed=0, dim=16)
    cfg = AnchoredTrainConfig(epochs=1, batch_size=16, seed=0)
    cfg.net.d, cfg.net.max_len = 8, 6
    res = train_anchored(cfg, split, inputs.matrix.numpy())
    assert res.model.item_tower.cfg.whiten_dim == 16


def test_id_rows_are_per_item_and_only_for_trained_items() -> None:
    rows, vocab = id_rows_for(np.array([2, 0, 1, 3]), ["a", "b", "c", "a"])
    assert rows.tolist() == [0, -1, 1, 0] and vocab == ["a", "c"]


def test_registry_round_trip_keeps_the_id_table_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    model = _model()
    serving = serving_contract(model, 6, "sliding", "mini@aaaa")
    assert serving.id_table_rows == 4 and serving.id_table_sha256 == model.item_tower.vocab.digest()
    reg = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError, match="needs a serving contract naming its ID table"):
        reg.save(
            model,
            content_model="mini@aaaa",
            serving=ServingConfig(6, "sliding", "mini@aaaa"),
        )
    v = reg.save(model, content_model="mini@aaaa", serving=serving)
    loaded = reg.load(v)
    assert loaded.serving == serving
    assert loaded.model.item_tower.vocab.item_ids == ["i0", "i1", "i2", "i3"]
    content = torch.randn(3, 12)
    ids = ["i2", "z", "i0"]
    torch.testing.assert_close(
        loaded.item_tower.encode_items(content, item_ids=ids),
        model.item_tower.encode_items(content, item_ids=ids),
        atol=0,
        rtol=0,
    )
    # another vocabulary of the same size beside these weights: refused
    (tmp_path / "versions" / v / "ids.json").write_text('["i0", "i1", "i3", "i2"]')
    with pytest.raises(RegistryError, match="ids.json has 4 ids"):
        reg.load(v)
    (tmp_path / "versions" / v / "ids.json").unlink()
    with pytest.raises(RegistryError, match="ids.json is missing"):
        reg.load(v)


def test_bias_and_cold_path_blocks_meet_the_users_vector() -> None:
    """Known items score in the first block, items without an ID row in the second; the
    last dimension is each item's bias, met by a constant 1."""
    model = _model(item_bias=True, cold_path=True)
    assert model.cfg.net.out_dim == 2 * 8 + 1
    vecs = model.item_tower.encode_items(torch.randn(2, 12), item_ids=["i1", "new"])
    assert vecs[0, 8:16].abs().sum() == 0 and vecs[0, :8].abs().sum() > 0
    assert vecs[1, :8].abs().sum() == 0 and vecs[1, 8:16].abs().sum() > 0
    users = model.user_tower.encode_rows(torch.randn(3, 12), torch.tensor([[0, 1, 2]]))
    assert users.shape == (1, 17) and users[0, -1] == 1.0


@pytest.fixture(scope="module", params=["plain", "bias+cold-path+sim"])
def trained(request):
    torch.set_num_threads(2)
    split, inputs = planted(200, 150, 30, seed=1, dim=32)
    content = inputs.matrix.numpy()
    extra = {"item_bias": True, "cold_path": True, "sim_dim": 8} if request.param != "plain" else {}
    cfg = AnchoredTrainConfig(
        net=AnchoredConfig(d=32, n_blocks=1, max_len=20, dropout=0.1, whiten_dim=32, **extra),
        epochs=6,
        eval_every=1,
        lr=3e-3,
        id_dropout=0.3,
    )
    return split, content, train_anchored(cfg, split, content)


def test_hybrid_learns_planted_topics_and_finds_cold_items_by_content(trained) -> None:
    from learn_core.models import Popularity

    split, _, res = trained
    got = summarise(eval_loop(anchored_score_fn(res.model, res.content, res.id_rows), split), split)
    pop = Popularity(split.n_items).fit(split.train)
    base = summarise(eval_loop(lambda u, h: pop.scores(len(u)), split), split)
    assert got["all"]["hr@10"] > 2.0 * base["all"]["hr@10"], (got["all"], base["all"])
    # cold items have no ID row, so they are found through their content alone
    assert (res.id_rows[torch.from_numpy(split.cold)] == -1).all()
    assert got["cold"]["n"] > 0 and got["cold"]["hr@10"] > 0.3 * got["warm"]["hr@10"]


def test_served_scores_equal_the_trainers_scores(trained) -> None:
    """What the consumers write (by item id) scores as the trainer's evaluation does."""
    split, content, res = trained
    served = served_score_fn(
        as_serving("v", res.model), content, split.item_ids, res.model.cfg.net.max_len
    )
    users = np.arange(20)
    hists = [split.history(int(u), "test") for u in users]
    want = anchored_score_fn(res.model, res.content, res.id_rows)(users, hists)
    np.testing.assert_allclose(served(users, hists), want, atol=1e-5, rtol=0)


def test_cvr_stage_trains_the_head_on_frozen_towers(trained) -> None:
    from trainers.anchored import anchored_cvr_stage

    split, _, res = trained
    before = {k: v.clone() for k, v in res.model.user_tower.state_dict().items()}
    out = anchored_cvr_stage(res, split, CVRStageConfig(epochs=1))
    assert np.isfinite(out["train_logloss"])
    after = res.model.user_tower.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
