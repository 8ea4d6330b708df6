"""Scoring with the CVR head at serving time: the batched torch path and its numpy twin.

Shared by every stage that scores (user, item) pairs with a served model; the ranking
reader is the main caller. ``score_pairs_reference`` is the plain per-pair path the
tests hold the fast paths equal to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from learn_core.models.cvr import CVRHead


def score_pairs(
    head: CVRHead, user: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One batched CVR forward: ``user [d]``, ``items [n, d]`` -> ``(mid [n, m], cvr [n])``.

    ``cvr`` is the sigmoid of the head's logit, i.e. a probability.
    """
    import torch

    n = items.shape[0]
    if n == 0:
        return np.zeros((0, head.cfg.mid_dim), np.float32), np.zeros(0, np.float32)
    with torch.inference_mode():
        it = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))
        u = torch.from_numpy(np.ascontiguousarray(user, dtype=np.float32)).expand(n, -1)
        mid, logit = head(u, it)
        return mid.numpy(), torch.sigmoid(logit).numpy()


@dataclass(frozen=True)
class NumpyCVR:
    """The CVR head's forward in numpy, for one user and many items (the serving shape).

    ``concat(u, i) @ W1`` is split as ``u @ W1u + i @ W1i``, so the user's half is one
    vector-matrix product per request; at 100 pairs this is about half the time of the
    torch forward (no dispatcher, no autograd state). ``from_head`` checks the head's
    structure and compares both on a probe batch, so a changed ``CVRHead`` falls back to
    torch (``score_pairs``) rather than scoring differently.
    """

    w_user: np.ndarray
    w_item: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    w3: np.ndarray
    b3: float

    def __call__(self, user: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        items = np.asarray(items, dtype=np.float32)
        hidden = items @ self.w_item
        hidden += np.asarray(user, dtype=np.float32) @ self.w_user + self.b1
        np.maximum(hidden, 0, out=hidden)
        mid = hidden @ self.w2
        mid += self.b2
        logit = np.maximum(mid, 0) @ self.w3 + self.b3
        # sigmoid via tanh: no overflow for large |logit|.
        cvr = (0.5 * (1.0 + np.tanh(0.5 * logit))).astype(np.float32)
        return mid, cvr

    @classmethod
    def from_head(cls, head: CVRHead, atol: float = 1e-5) -> NumpyCVR | None:
        """The numpy twin of ``head``, or None when ``head`` is not the known MLP."""
        from torch import nn

        layers = list(getattr(head, "mlp", []))
        kinds = [type(m) for m in layers]
        out = getattr(head, "out", None)
        if kinds != [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear] or not isinstance(out, nn.Linear):
            return None
        first, second = layers[0], layers[3]
        d = first.in_features // 2

        def arr(t: Any) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        w1 = arr(first.weight)
        twin = cls(
            w_user=np.ascontiguousarray(w1[:, :d].T),
            w_item=np.ascontiguousarray(w1[:, d:].T),
            b1=arr(first.bias),
            w2=np.ascontiguousarray(arr(second.weight).T),
            b2=arr(second.bias),
            w3=arr(out.weight)[0],
            b3=float(arr(out.bias)[0]),
        )
        rng = np.random.default_rng(0)
        user = rng.standard_normal(d).astype(np.float32)
        items = rng.standard_normal((8, d)).astype(np.float32)
        mid, cvr = twin(user, items)
        ref_mid, ref_cvr = score_pairs(head, user, items)
        if not (np.allclose(mid, ref_mid, atol=atol) and np.allclose(cvr, ref_cvr, atol=atol)):
            return None
        return twin


def score_pairs_reference(
    head: CVRHead, user: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The plain per-pair path that ``score_pairs`` must equal (tests only)."""
    import torch

    mids, cvrs = [], []
    with torch.no_grad():
        for row in items:
            mid, logit = head(
                torch.tensor(user, dtype=torch.float32)[None],
                torch.tensor(row, dtype=torch.float32)[None],
            )
            mids.append(mid[0].numpy())
            cvrs.append(float(torch.sigmoid(logit)[0]))
    return np.stack(mids), np.asarray(cvrs, np.float32)
