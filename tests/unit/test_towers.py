"""Tower shapes, normalisation, the causal mask and padding invariance."""

from __future__ import annotations

import pytest
import torch

from learn_core.models import CVRConfig, CVRHead, LearnConfig, LearnModel, TowerConfig


def _model(variant: int = 1, **kw: int) -> LearnModel:
    torch.manual_seed(0)
    m = LearnModel(
        LearnConfig(TowerConfig(content_dim=16, d_model=32, max_len=12, item_variant=variant, **kw))
    )
    return m.eval()


@pytest.mark.parametrize("variant", [1, 2, 3])
def test_shapes_and_unit_norm(variant: int) -> None:
    m = _model(variant)
    x, valid = torch.randn(3, 7, 16), torch.ones(3, 7, dtype=torch.bool)
    states = m.user_tower(x, valid)
    assert states.shape == (3, 7, 64)
    assert torch.allclose(states.norm(dim=-1), torch.ones(3, 7), atol=1e-5)
    assert m.item_tower(x[:, :4], valid[:, :4]).shape == (3, 4, 64)
    items = m.item_tower.encode_items(torch.randn(5, 16))
    assert items.shape == (5, 64)
    assert torch.allclose(items.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert m.user_tower.encode_histories(x, valid).shape == (3, 64)


def test_causal_mask_later_item_cannot_change_earlier_output() -> None:
    m = _model()
    x, valid = torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.bool)
    before = m.user_tower(x, valid)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 2, 16)  # change the last two items only
    after = m.user_tower(x2, valid)
    assert torch.allclose(before[:, :4], after[:, :4], atol=1e-6)
    assert not torch.allclose(before[:, 4:], after[:, 4:], atol=1e-3)


def test_padding_is_invisible_and_side_independent() -> None:
    m = _model()
    x = torch.randn(1, 4, 16)
    ref = m.user_tower.encode_histories(x, torch.ones(1, 4, dtype=torch.bool))
    right = torch.cat([x, torch.randn(1, 3, 16)], 1)
    left = torch.cat([torch.randn(1, 3, 16), x], 1)
    right_mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    assert torch.allclose(m.user_tower.encode_histories(right, right_mask), ref, atol=1e-5)
    assert torch.allclose(m.user_tower.encode_histories(left, right_mask.flip(1)), ref, atol=1e-5)


def test_encode_histories_equals_last_valid_position_of_forward() -> None:
    """The batched inference path against the plain per-row reference."""
    m = _model()
    x = torch.randn(3, 8, 16)
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] + [0] * 7], dtype=torch.bool)
    batched = m.user_tower.encode_histories(x, mask)
    for r, n in enumerate([8, 5, 1]):
        ref = m.user_tower(x[r : r + 1, :n], torch.ones(1, n, dtype=torch.bool))[0, -1]
        assert torch.allclose(batched[r], ref, atol=1e-5)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("left_pad", [False, True])
def test_last_position_forward_equals_full_forward(n_layers: int, left_pad: bool) -> None:
    """The fast inference forward against the full forward's last valid position (1e-6)."""
    m = _model(n_layers=n_layers)
    g = torch.Generator().manual_seed(n_layers)
    lengths = torch.randint(1, 13, (32,), generator=g)
    lengths[:3] = torch.tensor([12, 1, 0])  # full, one item, empty (diagonal-only row)
    x = torch.randn(32, 12, 16, generator=g)
    mask = torch.arange(12)[None] < lengths[:, None]
    if left_pad:
        mask = mask.flip(1)
    with torch.inference_mode():
        full = m.user_tower(x, mask)
        fast = m.user_tower.forward_last(x, mask)
    last = 11 - mask.flip(1).long().argmax(1)
    ref = full[torch.arange(32), last]
    assert fast.shape == (32, 64)
    assert torch.allclose(fast, ref, atol=1e-6, rtol=0)
    # the check can fail: a different last position gives a different state
    assert not torch.allclose(fast[3:], full[3:, 0], atol=1e-3)


@pytest.mark.parametrize("variant", [1, 2])
def test_shared_item_tower_at_inference_is_user_tower_on_one_item(variant: int) -> None:
    m = _model(variant)
    x = torch.randn(4, 16)
    one = m.user_tower(x[:, None], torch.ones(4, 1, dtype=torch.bool))[:, 0]
    assert torch.allclose(m.item_tower.encode_items(x), one, atol=1e-6)


def test_variant_2_reads_items_alone_variant_1_causally() -> None:
    x, valid = torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.bool)
    alone = _model(2)
    seq = alone.item_tower(x, valid)[0]
    assert torch.allclose(seq, alone.item_tower.encode_items(x[0]), atol=1e-5)
    causal = _model(1)
    seq1 = causal.item_tower(x, valid)[0]
    assert not torch.allclose(seq1[2], causal.item_tower.encode_items(x[0])[2], atol=1e-3)


def test_too_long_history_is_cut_to_most_recent() -> None:
    m = _model()
    x = torch.randn(1, 20, 16)
    full = m.user_tower.encode_histories(x, torch.ones(1, 20, dtype=torch.bool))
    recent = m.user_tower.encode_histories(x[:, -12:], torch.ones(1, 12, dtype=torch.bool))
    assert torch.allclose(full, recent, atol=1e-6)


def test_cvr_head_computes_its_mlp_and_learns_conversions() -> None:
    torch.manual_seed(0)
    head = CVRHead(CVRConfig(in_dim=64, mid_dim=32)).eval()
    user, item = torch.randn(5, 64), torch.randn(5, 64)
    mid, logit = head(user, item)
    assert mid.shape == (5, 32) and logit.shape == (5,)
    # Values: concat(user, item) -> Linear -> ReLU -> Linear = mid; ReLU(mid) -> Linear = logit.
    first, second = head.mlp[0], head.mlp[3]
    hidden = torch.relu(torch.cat([user, item], -1) @ first.weight.T + first.bias)
    want_mid = hidden @ second.weight.T + second.bias
    want_logit = torch.relu(want_mid) @ head.out.weight[0] + head.out.bias[0]
    torch.testing.assert_close(mid, want_mid)
    torch.testing.assert_close(logit, want_logit)
    # Learning: a conversion rule of the pair (user . item > 0) that neither side alone
    # decides is learnt to well above chance on held-out pairs.
    small = CVRHead(CVRConfig(in_dim=8, hidden=64, mid_dim=16, dropout=0.0))
    u, i = torch.randn(2000, 8), torch.randn(2000, 8)
    y = ((u * i).sum(-1) > 0).float()
    opt = torch.optim.Adam(small.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            small(u[:1500], i[:1500])[1], y[:1500]
        )
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = ((small(u[1500:], i[1500:])[1] > 0).float() == y[1500:]).float().mean()
    assert acc > 0.8, float(acc)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        TowerConfig(item_variant=4)
    with pytest.raises(ValueError):
        TowerConfig(d_model=30, n_heads=4)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_windows_as_rows_equal_the_gathered_windows(n_layers: int) -> None:
    """``forward_last_rows`` (the adaptor once per distinct item) against ``forward_last``
    on the same windows gathered into a ``[B, L, D]`` tensor, as serving built them."""
    m = _model(n_layers=n_layers)
    g = torch.Generator().manual_seed(n_layers)
    matrix = torch.randn(20, 16, generator=g)
    ids = torch.randint(0, 20, (32, 12), generator=g)
    lengths = torch.randint(1, 13, (32,), generator=g)
    lengths[:3] = torch.tensor([12, 1, 0])  # full, one item, only padding
    ids[torch.arange(12)[None] >= lengths[:, None]] = -1
    valid = ids >= 0
    gathered = matrix[ids.clamp(min=0)] * valid[..., None]
    with torch.inference_mode():
        ref = m.user_tower.forward_last(gathered, valid)
        rows = m.user_tower.forward_last_rows(matrix, ids)
        empty = m.user_tower.encode_rows(matrix[:0], torch.full((2, 12), -1))
    assert torch.allclose(rows, ref, atol=1e-6, rtol=0)
    assert torch.allclose(empty, ref[2:3].expand(2, -1), atol=1e-6, rtol=0)
    # the check can fail: other rows of the matrix give other states
    with torch.inference_mode():
        other = m.user_tower.forward_last_rows(matrix.flip(0), ids)
    assert not torch.allclose(other[:2], ref[:2], atol=1e-3)


def test_windows_wider_than_the_towers_positions_keep_their_newest_items() -> None:
    """A window wider than ``max_len`` (12) is cut to its newest 12 items, whether it is
    left-aligned (``pad_ids``' layout) or left-padded. Cutting the last 12 columns, as
    before, emptied a short left-aligned window and kept the wrong items of a long one."""
    from learn_core.history import pad_ids

    m = _model()
    g = torch.Generator().manual_seed(5)
    matrix = torch.randn(40, 16, generator=g)
    seqs = [torch.randint(0, 40, (n,), generator=g).numpy() for n in (3, 12, 17, 20)]
    ids = torch.from_numpy(pad_ids(seqs, 20))  # left-aligned, 20 wide
    with torch.inference_mode():
        wide = m.user_tower.encode_rows(matrix, ids)
        ref = m.user_tower.encode_rows(matrix, torch.from_numpy(pad_ids(seqs, 12)))
        left_padded = ids.flip(1)  # the same items, oldest first, padding in front
        left_padded[ids.flip(1) >= 0] = ids[ids >= 0]
        content = matrix[left_padded.clamp(min=0)]
        by_content = m.user_tower.encode_histories(content, left_padded >= 0)
        aligned = m.user_tower.encode_histories(matrix[ids.clamp(min=0)], ids >= 0)
    for got in (wide, by_content, aligned):
        assert torch.allclose(got, ref, atol=1e-6, rtol=0)
    # the check can fail: the old cut (the last 12 columns) gives other states
    with torch.inference_mode():
        old = m.user_tower.forward_last_rows(matrix, ids[:, -12:])
    for row in (0, 2):  # 3 items: all cut away; 17: 9 of its newest 12 kept
        assert not torch.allclose(old[row], ref[row], atol=1e-3)
