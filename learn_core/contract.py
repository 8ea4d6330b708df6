"""The serving contract a trained model carries in its manifest, checked where it is loaded.

A user tower is only correct on the windows and the content vectors it was trained on:
the window length ``history_len``, the ``pairing`` that shaped its training windows, and
the *identity* of the content model that made its input vectors (a digest of weights,
tokenizer, ``max_length``, pooling, dtype and item-text template; see
``learn_core.embedding.identity``). Two checkpoints of one width, or one checkpoint at
another ``max_length``, give vectors of the same shape and different meaning, so the
identity, not the width, decides whether a model may read them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

Pairing = Literal["window", "sliding"]
PAIRINGS: tuple[str, ...] = get_args(Pairing)
#: Longest window any tower config accepts (``TowerConfig.max_len`` is at most this).
MAX_HISTORY_LEN = 1024


class ContentMismatch(ValueError):
    """A model meets content vectors of another content model than it was trained on."""


@dataclass(frozen=True)
class ServingConfig:
    """What a model needs at serving time besides its weights; validated when built."""

    history_len: int
    pairing: Pairing
    #: Identity of the content model whose vectors the model was trained on.
    content_model: str
    #: Rows of the model's learned ID table (the content-anchored hybrid: one per item
    #: seen in training, looked up by item id; 0: content-only towers) and its version,
    #: the SHA-256 of its vocabulary (``ids.json``), so two tables of one size differ.
    id_table_rows: int = 0
    id_table_sha256: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.history_len, bool) or not isinstance(self.history_len, int):
            raise ValueError(f"history_len must be an int, got {self.history_len!r}")
        if not 1 <= self.history_len <= MAX_HISTORY_LEN:
            raise ValueError(
                f"history_len must be in [1, {MAX_HISTORY_LEN}], got {self.history_len}"
            )
        if self.pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        if not isinstance(self.content_model, str) or not self.content_model:
            raise ValueError(
                f"content_model must be a non-empty identity, got {self.content_model!r}"
            )
        if isinstance(self.id_table_rows, bool) or not isinstance(self.id_table_rows, int):
            raise ValueError(f"id_table_rows must be an int, got {self.id_table_rows!r}")
        if self.id_table_rows < 0:
            raise ValueError(f"id_table_rows must be >= 0, got {self.id_table_rows}")
        if (self.id_table_rows > 0) != (self.id_table_sha256 is not None):
            raise ValueError("id_table_sha256 is set exactly when id_table_rows > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServingConfig:
        """Strict: unknown or missing keys raise ``TypeError``."""
        return cls(**d)


def check_content(version: str, manifest: dict[str, Any] | None, expected: str, where: str) -> None:
    """Refuse ``version`` when its manifest names another content model than ``expected``.

    ``where`` says whose identity ``expected`` is (the running embedder, the store's
    vectors). A model without a manifest (built in-process) has nothing to check.
    """
    if manifest is None:
        return
    theirs = manifest.get("content_model")
    if theirs != expected:
        raise ContentMismatch(
            f"model {version} was trained on content model {theirs!r}, but {where} is "
            f"{expected!r}: its towers would read vectors of another model. Retrain on "
            "the current content embeddings, or run the content model it was trained on."
        )
