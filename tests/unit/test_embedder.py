"""The content embedder (CEG): pooling, batching equality, determinism, and a decoder LLM by path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from learn_core.embedding.hf import EmbedderSettings, HFEmbedder, default_model_path, masked_mean_l2
from learn_core.settings import ConfigError

TEXTS = [
    "Title: Trail running shoe\nCategory: Shoes",
    "Title: A\nDescription: " + "long text with many words " * 30,
    "Title: Espresso machine\nBrand: Acme\nPrice: 199.00",
    "Title: x",
]


@pytest.fixture(scope="module")
def minilm() -> HFEmbedder:
    return HFEmbedder(EmbedderSettings(batch_size=3))


def reference(emb: HFEmbedder, text: str) -> np.ndarray:
    """The plain path: one text, no padding, mean over all tokens, normalise."""
    enc = emb.tokenizer(
        text, truncation=True, max_length=emb.settings.max_length, return_tensors="pt"
    )
    with torch.inference_mode():
        h = emb.model(**enc).last_hidden_state[0].float()
    v = h.mean(dim=0)
    return (v / v.norm()).numpy()


def test_default_model_is_bundled_and_offline(minilm: HFEmbedder) -> None:
    assert (default_model_path() / "model.safetensors").exists()
    assert minilm.dim == 384 and minilm.model_id.endswith("all-MiniLM-L6-v2")
    assert minilm.device.type == "cpu" and minilm.dtype == torch.float32


def test_batched_bucketed_equals_plain_reference(minilm: HFEmbedder) -> None:
    out = minilm.embed(TEXTS)
    assert out.shape == (4, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    for row, text in zip(out, TEXTS, strict=True):
        np.testing.assert_allclose(row, reference(minilm, text), atol=1e-5)


def test_same_text_same_embedding_regardless_of_batch(minilm: HFEmbedder) -> None:
    a = minilm.embed([TEXTS[0]])
    b = minilm.embed([TEXTS[2], TEXTS[0], TEXTS[1]])[1]
    np.testing.assert_allclose(a[0], b, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)
    # Different items are told apart.
    assert float(a[0] @ minilm.embed([TEXTS[2]])[0]) < 0.9


def test_masked_mean_ignores_padding() -> None:
    h = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    m = torch.tensor([[1, 1, 0]])
    np.testing.assert_allclose(masked_mean_l2(h, m).numpy(), [[1.0, 0.0]], atol=1e-6)


def test_bad_model_path_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LEARNREC_EMBEDDER_MODEL"):
        HFEmbedder(EmbedderSettings(model=str(tmp_path / "missing")))


def test_decoder_llm_by_local_path(tmp_path: Path) -> None:
    """A (tiny, random) Llama-architecture decoder loads by path and pools like the encoder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    tok_dir = default_model_path()
    tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    cfg = LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    LlamaModel(cfg).save_pretrained(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tok_dir / f, tmp_path / f)
    emb = HFEmbedder(EmbedderSettings(model=str(tmp_path), batch_size=2))
    assert emb.tokenizer.padding_side == "right"
    out = emb.embed(TEXTS)
    assert out.shape == (4, 32) and emb.model_id == tmp_path.name
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Causal model + right padding + mask: batched equals one-at-a-time.
    for row, text in zip(out, TEXTS, strict=True):
        np.testing.assert_allclose(row, emb.embed([text])[0], atol=1e-5)
