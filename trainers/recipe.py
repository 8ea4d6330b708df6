"""The LEARN training recipe's settings shared by ``learnrec train`` and the retraining job.

A base class rather than a component: each subclass sets its own env prefix.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings


class RecipeSettings(BaseSettings):
    """How LEARN pairs users with targets, and which item tower it trains."""

    pairing: Literal["window", "sliding"] = Field(
        "window",
        description="window: K history positions x the T items after the history; "
        "sliding: every history position x the T items that follow it (best on MovieLens "
        "validation, see docs/quality.md)",
    )
    item_variant: int = Field(
        1, ge=1, le=3, description="item tower: 1 shared+causal, 2 shared, one item; 3 projection"
    )

    @model_validator(mode="after")
    def _sliding_needs_single_items(self) -> RecipeSettings:
        if self.pairing == "sliding" and self.item_variant == 1:
            prefix = self.model_config.get("env_prefix", "")
            raise ValueError(
                f"{prefix}ITEM_VARIANT must be 2 or 3 when {prefix}PAIRING=sliding "
                "(variant 1 reads a separate target sequence)"
            )
        return self
