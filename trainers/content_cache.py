"""Frozen content embeddings, computed once per (content model, item text) and cached.

Training never runs the language model per step: the item texts are embedded once,
stored under ``cache_dir()/content/<model>/`` as safetensors plus a JSON index of text
hashes, and read back as one matrix. A changed text (new hash) or a new model id is a
cache miss; nothing is ever recomputed otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from learn_core.embedding.base import ContentEmbedder
from learn_core.embedding.identity import content_identity
from learn_core.events import ItemCreated
from learn_core.item_text import render_item, text_hash
from learn_core.settings import cache_dir

log = logging.getLogger(__name__)


def _store_dir(root: Path, model_id: str) -> Path:
    return root / "content" / re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)


def content_matrix(
    items: Sequence[ItemCreated],
    embedder: ContentEmbedder,
    root: Path | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """``[len(items), embedder.dim]`` float32 content embeddings, from cache where possible."""
    # Keyed by the content identity, not the name: another checkpoint, max_length or dtype
    # behind the same name must not reuse these vectors.
    ident = content_identity(embedder)
    store = _store_dir(root or cache_dir(), ident)
    hashes = [text_hash(render_item(it)) for it in items]
    known: dict[str, int] = {}
    vectors = np.zeros((0, embedder.dim), dtype=np.float32)
    if (store / "index.json").exists():
        index = json.loads((store / "index.json").read_text())
        if index["model_id"] == ident and index["dim"] == embedder.dim:
            vectors = load_file(str(store / "vectors.safetensors"))["vectors"]
            known = {h: i for i, h in enumerate(index["hashes"])}
    missing = sorted({h for h in hashes if h not in known})
    if missing:
        texts = {text_hash(render_item(it)): render_item(it) for it in items}
        log.info("embedding %d new item texts with %s", len(missing), embedder.model_id)
        new = [
            embedder.embed([texts[h] for h in missing[i : i + batch_size]])
            for i in range(0, len(missing), batch_size)
        ]
        vectors = np.concatenate([vectors, *new]).astype(np.float32)
        for h in missing:
            known[h] = len(known)
        _write(store, ident, embedder.dim, vectors, sorted(known, key=known.__getitem__))
    return vectors[[known[h] for h in hashes]]


def _write(store: Path, ident: str, dim: int, vectors: np.ndarray, hashes: list[str]) -> None:
    """Vectors first, index last, each via temp file + ``os.replace``: a reader never sees a torn pair."""
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / "vectors.safetensors.tmp"
    save_file({"vectors": np.ascontiguousarray(vectors)}, str(tmp))
    os.replace(tmp, store / "vectors.safetensors")
    tmp_index = store / "index.json.tmp"
    tmp_index.write_text(json.dumps({"model_id": ident, "dim": dim, "hashes": hashes}))
    os.replace(tmp_index, store / "index.json")
