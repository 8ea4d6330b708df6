"""The content-embedding port (CEG): text in, L2-normalised float32 vectors out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ContentEmbedder(Protocol):
    """Anything that turns item texts into content embeddings.

    ``model_id`` names the model (and template) so that stored embeddings can say
    what made them; ``dim`` is the output width.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a ``(len(texts), dim)`` float32 array, rows L2-normalised."""
        ...
