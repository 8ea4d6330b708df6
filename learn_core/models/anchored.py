"""The content-anchored hybrid: SASRec+CE's backbone over content-first item vectors.

An item's vector is its frozen content embedding (whitened, then a learned linear map:
the *anchor*) plus, for items seen in training, a learned ID *correction* whose L2 norm
is bounded. The same vector is the user tower's input and the item's output vector
(tied), so a user's score for an item is ``user_vector . item_vector``: what the feature
store holds and the ranking reader's index searches. An item without an ID row (new, or
unseen in training) is scored from its content alone; the bound keeps the corrected
items in the content's neighbourhood, so new items compete on the same scale.

The user tower is SASRec's (Kang & McAuley, 2018): scaled item vectors plus learned
positions, pre-norm causal self-attention blocks, padded positions zeroed after every
block, a final LayerNorm. Item windows are left-padded; ``-1`` marks padding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learn_core.models.cvr import CVRConfig, CVRHead
from learn_core.models.sequence import SequenceTower, left_align_right, recency_mean

#: Bumped whenever a change would make old weights or configs load wrongly.
ANCHORED_SCHEMA = "anchored-v1"
ANCHORS = ("linear", "frozen", "none")
#: Whitened directions whose variance is below this share of the largest are dropped.
RANK_TOL = 1e-6
#: Initial per-dimension spread of item vectors (SASRec's Xavier-initialised table is ~0.02-0.1).
INIT_STD = 0.05


@dataclass
class AnchoredConfig:
    content_dim: int = 384
    d: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    max_len: int = 50
    dropout: float = 0.2
    #: Rows of the ID-correction table (the items seen in training); 0: content only.
    n_ids: int = 0
    #: Bound on each correction's L2 norm (None: unbounded).
    id_max_norm: float | None = 1.0
    #: Dimensions of the whitened content the anchor reads (at most ``content_dim``).
    whiten_dim: int = 256
    #: False: the anchor reads the raw content's first ``whiten_dim`` dimensions (ablation).
    whiten: bool = True
    #: "linear": a learned map of the whitened content; "frozen": its first ``d``
    #: dimensions times one learned scale (the content space itself); "none": no
    #: content at all (the ID-only ablation; an item without an ID row is a zero vector).
    anchor: str = "linear"
    #: One more dimension per vector: the item's score bias (from content, plus its ID
    #: correction), met by a constant 1 in the user's vector.
    item_bias: bool = False
    #: Score items without an ID row on a path of their own: their vector puts the
    #: content in a second block, met by a learned map of the user's state, so that
    #: content-only items are calibrated against corrected ones (trained by ``id_dropout``).
    cold_path: bool = False
    #: > 0: a content-similarity block of this many principal components (not whitened,
    #: unit length) in each item's vector, met by the recency-weighted mean of the same
    #: block over the user's window (``sim_decay`` per step back) times a learned scale:
    #: full-resolution "more like what they just bought", beside the ``d``-wide towers.
    sim_dim: int = 0
    sim_decay: float = 0.7

    def __post_init__(self) -> None:
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {self.anchor!r}")
        if self.anchor == "none" and (self.cold_path or self.sim_dim or self.item_bias):
            raise ValueError("anchor 'none' (the ID-only ablation) takes no content blocks")
        if self.d % self.n_heads:
            raise ValueError("d must be divisible by n_heads")
        if not 1 <= self.whiten_dim <= self.content_dim:
            raise ValueError(f"whiten_dim must be in [1, {self.content_dim}]")
        if self.anchor == "frozen" and self.whiten_dim < self.d:
            raise ValueError("anchor 'frozen' needs whiten_dim >= d")
        if not 0 <= self.sim_dim <= self.whiten_dim:
            raise ValueError(f"sim_dim must be in [0, whiten_dim={self.whiten_dim}]")
        if not 0.0 < self.sim_decay <= 1.0:
            raise ValueError(f"sim_decay must be in (0, 1], got {self.sim_decay}")
        if self.anchor == "frozen" and self.item_bias:
            raise ValueError("item_bias needs anchor 'linear' (the bias is learned from content)")
        if self.n_ids < 0:
            raise ValueError("n_ids must be >= 0")
        if self.id_max_norm is not None and not self.id_max_norm > 0:
            raise ValueError(f"id_max_norm must be > 0 or None, got {self.id_max_norm}")

    @property
    def out_dim(self) -> int:
        """Width of the user and item vectors (the serving code's name for it)."""
        return self.d * (2 if self.cold_path else 1) + int(self.item_bias) + self.sim_dim

    @property
    def vec_dim(self) -> int:
        """Width of the anchor and of an ID correction: the tower input, plus the bias."""
        return self.d + int(self.item_bias)


class IdVocab:
    """Item id -> row of the ID-correction table: the items seen in training, in row order.

    Saved beside the weights (``ids.json``); its ``digest`` is the ID table's version in
    the serving contract, so a reader can tell two tables of one size apart.
    """

    def __init__(self, item_ids: Sequence[str] = ()) -> None:
        self.item_ids = [str(i) for i in item_ids]
        self.index = {i: r for r, i in enumerate(self.item_ids)}
        if len(self.index) != len(self.item_ids):
            raise ValueError("the ID vocabulary has duplicate item ids")

    def __len__(self) -> int:
        return len(self.item_ids)

    def rows(self, item_ids: Sequence[str]) -> Tensor:
        """ID rows of ``item_ids`` (-1: no row, scored from content alone)."""
        get = self.index.get
        return torch.tensor([get(i, -1) for i in item_ids], dtype=torch.long)

    def to_json(self) -> str:
        return json.dumps(self.item_ids)

    @classmethod
    def from_json(cls, text: str) -> IdVocab:
        ids = json.loads(text)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("an ID vocabulary is a JSON list of item id strings")
        return cls(ids)

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


class ItemVectors(nn.Module):
    """Item tower: ``anchor(content) + correction(id_row)``, one item at a time."""

    def __init__(self, cfg: AnchoredConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Whitening of the content, fitted on the training items (``fit_whitening``) and
        # saved with the weights, so a new item's content is mapped the same way.
        self.register_buffer("center", torch.zeros(cfg.content_dim))
        self.register_buffer("basis", torch.eye(cfg.content_dim)[:, : cfg.whiten_dim].clone())
        # sqrt of each kept component's variance: undoes the whitening for ``sim_dim``
        self.register_buffer("spread", torch.ones(cfg.whiten_dim))
        if cfg.anchor == "linear":
            self.anchor = nn.Linear(cfg.whiten_dim, cfg.vec_dim)
            # Item vectors start at about SASRec's scale (0.05 per dimension).
            nn.init.normal_(self.anchor.weight, std=INIT_STD * cfg.whiten_dim**-0.5)
            nn.init.zeros_(self.anchor.bias)
        elif cfg.anchor == "frozen":
            self.log_scale = nn.Parameter(torch.tensor(INIT_STD).log())
        # Zero-initialised: every item starts as its content (AlphaFuse); training moves
        # the warm ones, within the bound. Without content, IDs start random (SASRec's).
        self.ids = nn.Parameter(torch.zeros(cfg.n_ids, cfg.vec_dim))
        if cfg.anchor == "none":
            nn.init.normal_(self.ids, std=INIT_STD)
        #: Which item each ID row belongs to (set by training, saved beside the weights).
        self.vocab = IdVocab()

    @torch.no_grad()
    def fit_whitening(self, content: Tensor) -> None:
        """PCA whitening of ``content [N, D]``: centred, rotated, unit variance per dimension."""
        if not self.cfg.whiten:
            return  # the identity basis of __init__
        x = content.double()
        center = x.mean(0)
        cov = (x - center).T @ (x - center) / max(len(x) - 1, 1)
        eigval, eigvec = torch.linalg.eigh(cov)
        order = eigval.argsort(descending=True)[: self.cfg.whiten_dim]
        top = eigval[order]
        # Directions the catalogue does not span (fewer items than dimensions, or a
        # degenerate content model) carry no signal: scaling them up to unit variance
        # would blow a new item's rounding noise up into its vector, so they are zeroed.
        spanned = top > RANK_TOL * top[0].clamp(min=1e-30)
        scale = torch.where(spanned, top.clamp(min=1e-30).rsqrt(), torch.zeros_like(top))
        self.center.copy_(center.float())
        self.basis.copy_((eigvec[:, order] * scale).float())
        self.spread.copy_(eigval[order].clamp(min=0).sqrt().float())

    def whiten(self, content: Tensor) -> Tensor:
        """``[N, content_dim] -> [N, whiten_dim]``; constant in training, so computed once."""
        return (content - self.center) @ self.basis

    def content_part(self, whitened: Tensor) -> Tensor:
        if self.cfg.anchor == "linear":
            return self.anchor(whitened)
        if self.cfg.anchor == "none":
            return whitened.new_zeros(whitened.shape[0], self.cfg.vec_dim)
        return whitened[..., : self.cfg.d] * self.log_scale.exp()

    def corrections(self) -> Tensor:
        """The ID table with each row's norm clipped to ``id_max_norm`` (differentiable)."""
        w = self.ids
        if self.cfg.id_max_norm is None or not len(w):
            return w
        norms = w.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return w * (self.cfg.id_max_norm / norms).clamp(max=1.0)

    def both(
        self, whitened: Tensor, id_rows: Tensor | None = None, drop: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(tower inputs [N, d], item vectors [N, out_dim])`` from whitened content;
        ``drop [n_ids]`` (training) zeroes those corrections for this step, so those items
        are read and scored as if they had no ID row."""
        anchor = self.content_part(whitened)
        has = None
        if id_rows is not None and self.cfg.n_ids:
            table = self.corrections()
            has = id_rows >= 0
            if drop is not None:
                has = has & ~drop[id_rows.clamp(min=0)]
            corrected = anchor + table[id_rows.clamp(min=0)] * has[:, None]
        else:
            corrected = anchor
        d = self.cfg.d
        inputs = corrected[:, :d]
        if self.cfg.cold_path:
            known = (
                torch.zeros_like(anchor[:, :1]) if has is None else has[:, None].to(anchor.dtype)
            )
            parts = [inputs * known, anchor[:, :d] * (1 - known)]
        else:
            parts = [inputs]
        if self.cfg.item_bias:
            parts.append(corrected[:, d:])
        if self.cfg.sim_dim:  # the tower input carries it too: the user side averages it
            k = self.cfg.sim_dim
            sim = F.normalize(whitened[:, :k] * self.spread[:k], dim=1)
            parts.append(sim)
            inputs = torch.cat([inputs, sim], dim=1)
        return inputs, torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def vectors(
        self, whitened: Tensor, id_rows: Tensor | None = None, drop: Tensor | None = None
    ) -> Tensor:
        """Item vectors ``[N, out_dim]`` (what the store holds); see ``both``."""
        return self.both(whitened, id_rows, drop)[1]

    def inputs(self, content: Tensor, id_rows: Tensor | None = None) -> Tensor:
        """The user tower's input for each item, ``[N, d]``: content plus its correction."""
        return self.both(self.whiten(content), id_rows)[0]

    def forward(self, content: Tensor, id_rows: Tensor | None = None) -> Tensor:
        """``content [N, D]``, ``id_rows [N]`` (-1: no ID row) -> item vectors ``[N, out_dim]``."""
        return self.vectors(self.whiten(content), id_rows)

    def id_rows(self, item_ids: Sequence[str] | None, n: int) -> Tensor:
        """ID rows of ``n`` items named ``item_ids`` (None: no ids known, content alone)."""
        if item_ids is None:
            return torch.full((n,), -1, dtype=torch.long)
        if len(item_ids) != n:
            raise ValueError(f"{len(item_ids)} item ids for {n} content rows")
        return self.vocab.rows(item_ids)

    @torch.no_grad()
    def encode_items(
        self,
        content: Tensor,
        batch_size: int = 8192,
        item_ids: Sequence[str] | None = None,
        id_rows: Tensor | None = None,
    ) -> Tensor:
        """Inference: one vector per item. Items are named by ``item_ids`` (looked up in
        the vocabulary) or by their ``id_rows``; neither: content alone."""
        if id_rows is None:
            id_rows = self.id_rows(item_ids, content.shape[0])
        parts = [
            self(c, r)
            for c, r in zip(content.split(batch_size), id_rows.split(batch_size), strict=True)
        ]
        return torch.cat(parts) if parts else content.new_zeros(0, self.cfg.out_dim)


@dataclass
class AnchoredModelConfig:
    net: AnchoredConfig = field(default_factory=AnchoredConfig)
    cvr: CVRConfig = field(default_factory=CVRConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"net": asdict(self.net), "cvr": asdict(self.cvr)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnchoredModelConfig:
        """Strict: unknown or missing keys raise ``TypeError`` (no silent defaults)."""
        if set(d) != {"net", "cvr"}:
            raise TypeError(f"config keys {sorted(d)} != ['cvr', 'net']")
        return cls(AnchoredConfig(**d["net"]), CVRConfig(**d["cvr"]))


class AnchoredModel(nn.Module):
    """Item tower, user tower and CVR head of the content-anchored hybrid."""

    def __init__(self, cfg: AnchoredModelConfig) -> None:
        super().__init__()
        if cfg.cvr.in_dim != cfg.net.out_dim:
            raise ValueError("cvr.in_dim must equal net.out_dim")
        self.cfg = cfg
        self.item_tower = ItemVectors(cfg.net)
        self.user_tower = AnchoredUserTower(cfg.net, self.item_tower)
        self.cvr_head = CVRHead(cfg.cvr)
        for name, p in self.named_parameters():
            if p.dim() > 1 and name.startswith("user_tower.seq."):
                nn.init.xavier_normal_(p)


class AnchoredUserTower(nn.Module):
    """The user tower with the item tower it reads through (shared, not owned)."""

    def __init__(self, cfg: AnchoredConfig, items: ItemVectors) -> None:
        super().__init__()
        self.cfg = cfg
        self.seq = SequenceTower(cfg)
        if cfg.cold_path:
            self.cold_proj = nn.Linear(cfg.d, cfg.d)
            with torch.no_grad():  # starts as the ID path's own state
                self.cold_proj.weight.copy_(torch.eye(cfg.d))
                self.cold_proj.bias.zero_()
        if cfg.sim_dim:
            self.sim_scale = nn.Parameter(torch.tensor(0.0))
        self._items = [items]  # a list: not registered twice in the state dict

    @property
    def items(self) -> ItemVectors:
        return self._items[0]

    def forward_rows(self, table: Tensor, ids: Tensor) -> Tensor:
        """``table [U, d (+ sim_dim)]`` tower inputs (``ItemVectors.both``), ``ids [B, L]``
        rows of it (-1 pad, left-padded) -> the user's vector after each position,
        ``[B, L, out_dim]``."""
        valid = ids >= 0
        rows = table[ids.clamp(min=0)] * valid[..., None]
        d = self.cfg.d
        h = self.seq(rows[..., :d], valid)
        parts = [h]
        if self.cfg.cold_path:  # meets the content block of items without an ID row
            parts.append(self.cold_proj(h))
        if self.cfg.item_bias:  # the constant that meets each item's bias
            parts.append(h.new_ones(*h.shape[:-1], 1))
        if self.cfg.sim_dim:
            parts.append(
                self.sim_scale.exp() * recency_mean(rows[..., d:], valid, self.cfg.sim_decay)
            )
        return torch.cat(parts, dim=-1) if len(parts) > 1 else h

    @property
    def vocab(self) -> IdVocab:
        return self.items.vocab

    @torch.no_grad()
    def encode_rows(
        self,
        matrix: Tensor,
        ids: Tensor,
        item_ids: Sequence[str] | None = None,
        id_rows: Tensor | None = None,
    ) -> Tensor:
        """Inference: the user vector after each window's newest item, ``[B, d]``.

        ``matrix [U, D]`` holds each distinct item's content once, named by ``item_ids``
        (or given as ``id_rows``; neither: content only), ``ids [B, L]`` the windows as
        rows of ``matrix`` (-1 = padding, anywhere). A window longer than ``max_len``
        keeps its newest items.
        """
        if id_rows is None:
            id_rows = self.items.id_rows(item_ids, matrix.shape[0])
        if matrix.shape[0] == 0:
            matrix = matrix.new_zeros(1, matrix.shape[1])
            id_rows = None
        table = self.items.inputs(matrix, id_rows)
        ids = left_align_right(ids, self.cfg.max_len)
        return self.forward_rows(table, ids)[:, -1]


def catalogue_logits(user: Tensor, items: Tensor) -> Tensor:
    """``user [M, d] . items [N, d]^T``: the tied output layer."""
    return F.linear(user, items)
