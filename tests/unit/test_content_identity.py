"""A content model's identity is a digest of what makes its vectors, not its name or width."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from learn_core.embedding.hf import EmbedderSettings, HFEmbedder, default_model_path
from learn_core.embedding.identity import content_identity, file_digest, identity_of

IDENT = re.compile(r"^[^@]+@[0-9a-f]{16}$")


def tiny_bert(path: Path, seed: int) -> Path:
    """A 1-layer BERT with the bundled tokenizer: same name and width for every seed."""
    from transformers import BertConfig, BertModel

    tok_dir = default_model_path()
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(path)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tok_dir / f, path / f)
    return path


def embedder(path: Path, **kw: object) -> HFEmbedder:
    return HFEmbedder(EmbedderSettings(model=str(path), device="cpu", **kw))


def test_identity_separates_checkpoints_of_one_name_and_width(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEARNREC_CACHE_DIR", str(tmp_path / "cache"))
    a = embedder(tiny_bert(tmp_path / "a" / "ckpt", seed=0), max_length=64)
    b = embedder(tiny_bert(tmp_path / "b" / "ckpt", seed=1), max_length=64)
    assert a.model_id == b.model_id == "ckpt" and a.dim == b.dim == 32
    assert IDENT.match(a.identity) and a.identity.startswith("ckpt@")
    assert a.identity != b.identity  # same name, same width, other weights
    # Stable: a second load of the same files has the same identity.
    assert embedder(tmp_path / "a" / "ckpt", max_length=64).identity == a.identity
    # max_length and dtype change the vectors, so they change the identity.
    assert embedder(tmp_path / "a" / "ckpt", max_length=32).identity != a.identity
    assert embedder(tmp_path / "a" / "ckpt", max_length=64, dtype="bfloat16").identity != (
        a.identity
    )
    # One function names any embedder; the Hugging Face one by its identity.
    assert content_identity(a) == a.identity


def test_identity_digest_is_pinned_and_covers_each_part() -> None:
    parts = {"weights": {"model.safetensors": "0" * 64}, "tokenizer": {}}
    base = identity_of("m", parts, max_length=256, pooling="masked-mean-l2", dtype="float32")
    # Pinned: a change of the digest's recipe would orphan every stored vector's version.
    assert base == "m@6b7f360fda3042d6", base
    variants = [
        identity_of("m", parts, max_length=128, pooling="masked-mean-l2", dtype="float32"),
        identity_of("m", parts, max_length=256, pooling="cls", dtype="float32"),
        identity_of("m", parts, max_length=256, pooling="masked-mean-l2", dtype="bfloat16"),
        identity_of(
            "m",
            parts,
            max_length=256,
            pooling="masked-mean-l2",
            dtype="float32",
            template_version="item-text-v2",
        ),
        identity_of(
            "m",
            {"weights": {"model.safetensors": "1" * 64}, "tokenizer": {}},
            max_length=256,
            pooling="masked-mean-l2",
            dtype="float32",
        ),
    ]
    assert len({base, *variants}) == 6


def test_file_digest_is_cached_by_size_and_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEARNREC_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    # sha256("abc")
    want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_digest(f) == want
    assert want in (tmp_path / "cache" / "file-digests.json").read_text()
    f.write_bytes(b"abcd")  # new size: re-hashed, not served from the cache
    assert file_digest(f) != want


def test_embedders_without_weights_are_named_by_id_width_and_template() -> None:
    class Fake:
        model_id = "hash-test"
        dim = 8

    class Wider(Fake):
        dim = 16

    assert IDENT.match(content_identity(Fake()))
    assert content_identity(Fake()) == content_identity(Fake()) != content_identity(Wider())
