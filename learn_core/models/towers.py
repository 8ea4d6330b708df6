"""LEARN's user tower (PCH) and item tower over frozen content embeddings.

The user tower reads a user's items, oldest first, as content vectors: a linear
adaptor to ``d_model``, a causal transformer encoder with learned positions, and a
projection to an L2-normalised ``out_dim`` embedding at every position. Position ``i``
sees items ``0..i`` only, so one forward pass yields the user state after each item,
which the dense all-action loss uses.

The item tower has three variants (``TowerConfig.item_variant``):

1. shares the user tower's weights and reads the user's *target sequence* causally
   during training (the paper's best variant, the default);
2. shares the weights and reads each item alone;
3. projects the content embedding directly.

At inference every variant takes one item at a time (``encode_items``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Bumped whenever a change would make old weights or configs load wrongly.
TOWER_SCHEMA = "learn-towers-v1"


@dataclass
class TowerConfig:
    content_dim: int = 384
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ff_mult: int = 4
    max_len: int = 64
    out_dim: int = 64
    dropout: float = 0.0  # CPU dropout costs a third of a step; weight decay regularises
    item_variant: int = 1

    def __post_init__(self) -> None:
        if self.item_variant not in (1, 2, 3):
            raise ValueError(f"item_variant must be 1, 2 or 3, got {self.item_variant}")
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")


def attention_mask(valid: Tensor, n_heads: int) -> Tensor:
    """Boolean ``[B*heads, L, L]`` mask, True = blocked: causal, padding keys hidden.

    The diagonal always stays open so that a padded query still has one key and the
    softmax never sees an all-blocked row (which would give NaN).
    """
    _, length = valid.shape
    idx = torch.arange(length, device=valid.device)
    causal = idx[None, :] <= idx[:, None]  # [L(query), L(key)]
    allowed = causal[None] & (
        valid[:, None, :] | torch.eye(length, dtype=torch.bool, device=valid.device)[None]
    )
    return (~allowed).repeat_interleave(n_heads, dim=0)


class UserTower(nn.Module):
    """Content sequence -> L2-normalised embedding per position (causal)."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.adaptor = nn.Linear(cfg.content_dim, cfg.d_model)
        # Unit-norm content vectors give tiny per-dimension values; normalising the adaptor
        # output keeps them from being drowned by the position embeddings at the start.
        self.in_norm = nn.LayerNorm(cfg.d_model)
        self.positions = nn.Embedding(cfg.max_len, cfg.d_model)
        nn.init.normal_(self.positions.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model,
            cfg.n_heads,
            cfg.d_model * cfg.ff_mult,
            cfg.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.out_dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, content: Tensor, valid: Tensor) -> Tensor:
        """``content [B, L, D]``, ``valid [B, L]`` (True = real item) -> ``[B, L, out_dim]``.

        Positions count valid items, so left- and right-padding give the same result.
        """
        if content.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence length {content.shape[1]} > max_len {self.cfg.max_len}")
        valid = valid.bool()
        x = self.encoder(self._inputs(content, valid), mask=attention_mask(valid, self.cfg.n_heads))
        return F.normalize(self.proj(self.norm(x)), dim=-1)

    def _inputs(self, content: Tensor, valid: Tensor) -> Tensor:
        return self._place(self.project(content), valid)

    def project(self, content: Tensor) -> Tensor:
        """The per-item half of the input: ``[..., content_dim] -> [..., d_model]``.

        It does not depend on the position, so inference runs it once per distinct item
        (``forward_last_rows``) rather than once per window position.
        """
        return self.in_norm(self.adaptor(content))

    def _place(self, projected: Tensor, valid: Tensor) -> Tensor:
        pos = (valid.long().cumsum(1) - 1).clamp(min=0)
        return self.dropout(projected + self.positions(pos)) * valid[..., None]

    def forward_last(self, content: Tensor, valid: Tensor) -> Tensor:
        """``forward`` at each row's last valid position only: ``[B, L, D] -> [B, out_dim]``.

        Inference writes only the newest user state. Every layer but the last still runs
        on all positions (the last query attends to their keys and values), but the last
        layer's attention query, feed-forward block and the output head run on one
        position per row, which skips most of the last layer's work. Equal to
        ``forward(...)[rows, last]`` up to float rounding (tested at 1e-6).
        """
        if content.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence length {content.shape[1]} > max_len {self.cfg.max_len}")
        valid = valid.bool()
        return self._last(self._inputs(content, valid), valid)

    def forward_last_rows(self, matrix: Tensor, ids: Tensor) -> Tensor:
        """``forward_last`` over windows given as rows of a content matrix.

        ``matrix [U, D]`` holds each distinct item once and ``ids [B, L]`` indexes it (-1 =
        padding). The adaptor then runs on ``U`` rows instead of ``B * L`` positions, and
        no ``[B, L, D]`` content tensor is built: a streaming batch's windows share most
        of their items. Equal to ``forward_last`` on the gathered windows up to float
        rounding (tested).
        """
        if ids.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence length {ids.shape[1]} > max_len {self.cfg.max_len}")
        valid = ids >= 0
        if matrix.shape[0] == 0:  # only padding: any row will do, it is masked out
            matrix = matrix.new_zeros(1, matrix.shape[1])
        projected = self.project(matrix)[ids.clamp(min=0)]
        return self._last(self._place(projected, valid), valid)

    def _last(self, x: Tensor, valid: Tensor) -> Tensor:
        b, length = valid.shape
        heads = self.cfg.n_heads
        mask = attention_mask(valid, heads)
        *head, tail = self.encoder.layers
        if not tail.norm_first:
            raise ValueError("forward_last expects pre-norm (norm_first) encoder layers")
        for layer in head:  # as nn.TransformerEncoder calls them (its causal check is False)
            x = layer(x, src_mask=mask, is_causal=False)
        rows = torch.arange(b, device=x.device)
        last = length - 1 - valid.flip(1).long().argmax(1)  # index of the last True
        kv = tail.norm1(x)
        q_mask = mask.view(b, heads, length, length)[rows, :, last].reshape(b * heads, 1, length)
        attn = tail.self_attn(kv[rows, last, None], kv, kv, attn_mask=q_mask, need_weights=False)
        h = x[rows, last] + tail.dropout1(attn[0][:, 0])
        ff = tail.linear2(tail.dropout(tail.activation(tail.linear1(tail.norm2(h)))))
        h = h + tail.dropout2(ff)
        return F.normalize(self.proj(self.norm(h)), dim=-1)

    @torch.no_grad()
    def encode_histories(self, content_emb: Tensor, mask: Tensor) -> Tensor:
        """Batched inference: the embedding at each row's last valid position, ``[B, out_dim]``.

        Longer histories are cut to the most recent ``max_len`` items, wherever the padding is.
        """
        mask = mask.bool()
        if content_emb.shape[1] > self.cfg.max_len:
            order, mask = newest(mask, self.cfg.max_len)
            content_emb = content_emb.gather(
                1, order[..., None].expand(-1, -1, content_emb.shape[2])
            )
        return self.forward_last(content_emb, mask)

    @torch.no_grad()
    def encode_rows(
        self, matrix: Tensor, ids: Tensor, item_ids: Sequence[str] | None = None
    ) -> Tensor:
        """``encode_histories`` over windows given as row indices into ``matrix`` (-1 = pad).

        ``item_ids`` names the rows of ``matrix``; these towers read content alone and
        ignore it (the content-anchored hybrid's towers look up ID rows with it).
        """
        if ids.shape[1] > self.cfg.max_len:
            order, keep = newest(ids >= 0, self.cfg.max_len)
            ids = torch.where(keep, ids.gather(1, order), -1)
        return self.forward_last_rows(matrix, ids)


def newest(valid: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The positions of each row's newest ``n`` valid entries, in order, and which of those
    ``n`` columns are valid: ``[B, L] -> ([B, n] index, [B, n] bool)``.

    Cutting the last ``n`` columns is right for left-padded rows only; a left-aligned
    window shorter than the cut (``pad_ids``' layout) would lose all its items.
    """
    after = valid.flip(1).long().cumsum(1).flip(1)  # valid entries at or after each position
    keep = valid & (after <= n)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :n]
    return order, keep.gather(1, order)


class ItemTower(nn.Module):
    """Item embeddings in the user tower's space; see the module docstring for variants."""

    def __init__(self, cfg: TowerConfig, user_tower: UserTower) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.item_variant in (1, 2):
            self.shared = user_tower
        else:
            self.proj = nn.Linear(cfg.content_dim, cfg.out_dim)

    def forward(self, content: Tensor, valid: Tensor) -> Tensor:
        """Training path: a target sequence ``[B, T, D]`` -> ``[B, T, out_dim]``."""
        if self.cfg.item_variant == 1:
            return self.shared(content, valid)
        b, t, d = content.shape
        return self.embed(content.reshape(b * t, d)).reshape(b, t, -1)

    def embed(self, content: Tensor) -> Tensor:
        """Each item alone, with gradients: ``[N, D] -> [N, out_dim]`` (variant 1 reads one item)."""
        if self.cfg.item_variant == 3:
            return F.normalize(self.proj(content), dim=-1)
        ones = torch.ones(content.shape[0], 1, dtype=torch.bool, device=content.device)
        return self.shared(content[:, None, :], ones)[:, 0]

    @torch.no_grad()
    def encode_items(
        self, content_emb: Tensor, batch_size: int = 4096, item_ids: Sequence[str] | None = None
    ) -> Tensor:
        """Batched inference: one embedding per item, ``[N, D] -> [N, out_dim]``
        (``item_ids``: ignored, as in ``UserTower.encode_rows``)."""
        parts = [self.embed(c) for c in content_emb.split(batch_size)]
        return torch.cat(parts) if parts else content_emb.new_zeros(0, self.cfg.out_dim)


class FrozenContent(nn.Module):
    """Item index -> frozen content vector (a non-persistent buffer: never saved as weights)."""

    def __init__(self, matrix: Tensor) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix.float(), persistent=False)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def forward(self, idx: Tensor) -> Tensor:
        return self.matrix[idx.clamp(min=0)]


class ItemIdEmbedding(nn.Module):
    """Item index -> learned vector: the ``learn_id`` ablation's stand-in for content."""

    def __init__(self, n_items: int, dim: int = 64) -> None:
        super().__init__()
        self.table = nn.Embedding(n_items, dim)
        nn.init.normal_(self.table.weight, std=dim**-0.5)

    @property
    def dim(self) -> int:
        return int(self.table.embedding_dim)

    @property
    def matrix(self) -> Tensor:
        return self.table.weight

    def forward(self, idx: Tensor) -> Tensor:
        return self.table(idx.clamp(min=0))


class HybridItemInputs(nn.Module):
    """Item index -> ``[content vector, learned ID vector]``: content plus an ID for warm items.

    Cold items (``warm`` False) have a zero ID part, so the towers place them from their
    content alone. In training the ID part of every looked-up item is zeroed with
    probability ``id_dropout``, so that the towers also learn to place warm items from
    content alone, which is the state a cold item is always in. With ``id_dropout=1``
    training is exactly the pure-content model's (tested); the IDs, never trained, would
    still be added at inference, so the pure-content model itself uses ``FrozenContent``.
    """

    def __init__(
        self, content: Tensor, warm: Tensor, id_dim: int = 64, id_dropout: float = 0.5
    ) -> None:
        super().__init__()
        if not 0.0 <= id_dropout <= 1.0:
            raise ValueError(f"id_dropout must be in [0, 1], got {id_dropout}")
        if warm.shape != (content.shape[0],):
            raise ValueError("warm must be one flag per content row")
        self.register_buffer("content", content.float(), persistent=False)
        self.register_buffer("warm", warm.bool(), persistent=False)
        self.table = nn.Embedding(content.shape[0], id_dim)
        nn.init.normal_(self.table.weight, std=id_dim**-0.5)
        self.id_dropout = id_dropout

    @property
    def dim(self) -> int:
        return int(self.content.shape[1] + self.table.embedding_dim)

    @property
    def matrix(self) -> Tensor:
        """Every item's inference-time input (no dropout): ``[N, dim]``."""
        return torch.cat([self.content, self.table.weight * self.warm[:, None]], dim=1)

    def forward(self, idx: Tensor) -> Tensor:
        idx = idx.clamp(min=0)
        keep = self.warm[idx]
        if self.training and self.id_dropout > 0:
            keep = keep & (torch.rand(idx.shape, device=idx.device) >= self.id_dropout)
        ids = self.table(idx) * keep[..., None]
        return torch.cat([self.content[idx], ids], dim=-1)
