"""``bench.content_models``: one content model through embedding rate, training and the table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bench.content_models import main
from learn_core.embedding.hf import default_model_path


@pytest.mark.slow
def test_one_epoch_report_has_rate_quality_and_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    monkeypatch.setenv("LEARNREC_CACHE_DIR", str(tmp_path / "cache"))
    tok_dir = default_model_path()
    tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    model_dir = tmp_path / "tiny-decoder"
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
    )
    LlamaModel(cfg).save_pretrained(model_dir)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tok_dir / f, model_dir / f)
    out = tmp_path / "cm.json"
    threads = torch.get_num_threads()
    try:
        main(["--dataset", "sample", "--models", str(model_dir), "--quick", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    m = report["models"][str(model_dir)]
    e, r = m["embedding"], m["learn"]
    assert e["items"] == 500 and e["dim"] == 16 and e["items_per_s"] > 0
    assert e["architecture"] == "LlamaModel" and e["id"].startswith("tiny-decoder@")
    assert e["torch_threads"] == 1 and "load_avg_1m_before" in e
    assert r["epochs_run"] == 1 and 0.0 <= r["test"]["hr@10"] <= 1.0
    assert r["test_cold"]["n"] > 0 and r["test_warm"]["n"] > 0 and "ndcg@10" in r["valid"]
    table = out.with_suffix(".md").read_text()
    assert e["id"] in table and "test cold HR@10" in table
