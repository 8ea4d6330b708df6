"""A content model's identity: what makes its vectors mean what they mean, as one digest.

``name@<16 hex>``: the readable name (the bundled model's id or a directory name) and a
SHA-256 over the weights, the tokenizer files, ``max_length``, the pooling, the dtype
and the item-text template version. The same string is written as ``model_version`` into
every content embedding and as ``content_model`` into every model manifest, so two
checkpoints that share a directory name or a width are never mixed silently.

Hashing a multi-GB checkpoint on every start would be slow, so a file's digest is
cached per (path, size, mtime) in the process and in ``<cache dir>/file-digests.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from learn_core.item_text import TEMPLATE_VERSION

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)

_lock = threading.Lock()
_memo: dict[str, str] = {}


def _disk_cache() -> Path:
    from learn_core.settings import cache_dir

    return cache_dir() / "file-digests.json"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, computed once per (path, size, mtime)."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    with _lock:
        if key in _memo:
            return _memo[key]
        cache = _disk_cache()
        known: dict[str, str] = {}
        if cache.exists():
            try:
                known = json.loads(cache.read_text())
            except (OSError, ValueError):
                known = {}
        if key in known:
            _memo[key] = known[key]
            return known[key]
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        digest = h.hexdigest()
        _memo[key] = digest
        known[key] = digest
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known))
            os.replace(tmp, cache)
        except OSError as exc:  # an unwritable cache dir only costs a re-hash next time
            log.debug("file digest cache not written: %s", exc)
        return digest


def files_digest(root: Path, names: list[str]) -> dict[str, str]:
    return {n: file_digest(root / n) for n in sorted(names)}


def model_dir_parts(root: Path) -> dict[str, Any]:
    """The digests of a model directory's weights (+ config) and tokenizer files."""
    files = sorted(p.name for p in root.iterdir() if p.is_file())
    weights = [n for n in files if n.endswith(WEIGHT_SUFFIXES) or n == "config.json"]
    tokenizer = [n for n in files if n in TOKENIZER_FILES]
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in weights):
        raise ValueError(f"{root}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    return {"weights": files_digest(root, weights), "tokenizer": files_digest(root, tokenizer)}


def identity_of(
    name: str,
    parts: dict[str, Any],
    *,
    max_length: int | None,
    pooling: str,
    dtype: str,
    template_version: str = TEMPLATE_VERSION,
) -> str:
    """``name@digest`` over everything that changes what the vectors mean."""
    payload = {
        "parts": parts,
        "max_length": max_length,
        "pooling": pooling,
        "dtype": dtype,
        "template_version": template_version,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return f"{name}@{digest}"


def content_identity(embedder: Any) -> str:
    """The identity of ``embedder``'s vectors.

    An embedder that knows its weights says so (``HFEmbedder.identity``); any other
    ``ContentEmbedder`` (test doubles, remote services) is named by its ``model_id``,
    width and the template.
    """
    ident = getattr(embedder, "identity", None)
    if isinstance(ident, str) and ident:
        return ident
    return identity_of(
        str(embedder.model_id),
        {"model_id": str(embedder.model_id), "dim": int(embedder.dim)},
        max_length=None,
        pooling="unknown",
        dtype="float32",
    )
