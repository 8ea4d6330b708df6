"""Registry over an object store (fsspec ``memory://``): manifest last, digests, settings.

The same protocol against a real S3 server is ``tests/integration/test_registry_s3.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from learn_core.models.learn import LearnConfig, LearnModel
from learn_core.models.towers import TowerConfig
from learn_core.registry import MANIFEST, WEIGHTS, ModelRegistry, RegistryError, RegistrySettings
from learn_core.settings import ConfigError, load


def _model(seed: int) -> LearnModel:
    torch.manual_seed(seed)
    return LearnModel(
        LearnConfig(tower=TowerConfig(content_dim=16, d_model=16, n_heads=2, max_len=8))
    )


@pytest.fixture
def mem_registry() -> ModelRegistry:
    return ModelRegistry(f"memory://reg-{uuid.uuid4().hex[:8]}/models")


def test_round_trip_over_object_store(mem_registry: ModelRegistry) -> None:
    reg = mem_registry
    a, b = _model(0), _model(1)
    va = reg.save(a, content_model="mini")
    vb = reg.save(b, content_model="mini", parent_version=va)
    assert reg.versions() == sorted([va, vb])
    assert reg.current_version() is None
    reg.promote(vb)
    assert reg.current_version() == vb
    loaded = reg.load(vb)
    assert loaded.manifest["parent_version"] == va
    for k, t in b.state_dict().items():
        assert torch.equal(t, loaded.model.state_dict()[k]), k
    keys = sorted(k.rsplit("/", 1)[1] for k in reg.store.fs.find(reg.store._key("versions", vb)))
    assert keys == [MANIFEST, WEIGHTS]  # safetensors + JSON, nothing else


def test_version_without_manifest_is_invisible(mem_registry: ModelRegistry) -> None:
    """A writer that died after the weights and before the manifest left no version."""
    reg = mem_registry
    v = reg.save(_model(0), content_model="mini")
    fs = reg.store.fs
    fs.rm(reg.store._key("versions", v, MANIFEST))
    assert reg.versions() == []
    with pytest.raises(RegistryError, match="no model version"):
        reg.load(v)
    with pytest.raises(RegistryError, match="no model version"):
        reg.promote(v)
    assert reg.current_version() is None


def test_foreign_weights_refused(mem_registry: ModelRegistry) -> None:
    """Weights that are not the ones the manifest was written for never load."""
    reg = mem_registry
    v1 = reg.save(_model(0), content_model="mini")
    v2 = reg.save(_model(1), content_model="mini")
    fs = reg.store.fs
    fs.pipe_file(reg.store._key("versions", v2, WEIGHTS), reg.store.read(v1, WEIGHTS))
    with pytest.raises(RegistryError, match="weights digest"):
        reg.load(v2)
    reg.load(v1)


def test_local_registry_refuses_foreign_weights(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    v1 = reg.save(_model(0), content_model="mini")
    v2 = reg.save(_model(1), content_model="mini")
    (tmp_path / "versions" / v2 / WEIGHTS).write_bytes(
        (tmp_path / "versions" / v1 / WEIGHTS).read_bytes()
    )
    with pytest.raises(RegistryError, match="weights digest"):
        reg.load(v2)


def test_url_through_pathlib_is_still_the_url(tmp_path: Path) -> None:
    """``--registry s3://...`` parsed with ``type=Path`` must not become a local dir."""
    from learn_core.registry_store import unmangle

    assert unmangle(Path("s3://bucket/a/b")) == "s3://bucket/a/b"
    assert unmangle(Path("memory://reg/x")) == "memory://reg/x"
    assert unmangle(Path("s3:")) == Path("s3:")
    assert unmangle(tmp_path / "s3:" / "x") == tmp_path / "s3:" / "x"  # absolute: a path
    root = f"memory://reg-{uuid.uuid4().hex[:8]}/m"
    reg = ModelRegistry(Path(root))
    assert reg.root == root and not Path(root.split("//")[0]).exists()


def test_file_url_is_the_local_backend(tmp_path: Path) -> None:
    reg = ModelRegistry(f"file://{tmp_path}")
    assert reg.root == tmp_path
    v = reg.save(_model(0), content_model="mini")
    reg.promote(v)
    assert ModelRegistry(tmp_path).current_version() == v


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"LEARNREC_REGISTRY_ROOT": "ftp://host/x"}, "LEARNREC_REGISTRY_ROOT: .*unsupported"),
        ({"LEARNREC_REGISTRY_ROOT": "s3://key:secret@bucket/x"}, "credentials in the URL"),
        ({"LEARNREC_REGISTRY_ROOT": "s3:///x"}, "no bucket"),
        ({"LEARNREC_REGISTRY_ENDPOINT_URL": "127.0.0.1:9000"}, "LEARNREC_REGISTRY_ENDPOINT_URL"),
        (
            {"LEARNREC_REGISTRY_ROOT": "s3://bucket/x", "AWS_ACCESS_KEY_ID": "AKIA"},
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
        ),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], match: str
) -> None:
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=match):
        load(RegistrySettings)


def test_local_registry_does_not_import_fsspec(tmp_path: Path) -> None:
    code = (
        "import sys; from learn_core.registry import ModelRegistry; "
        f"r = ModelRegistry({str(tmp_path)!r}); r.versions(); r.current_version(); "
        "assert 'fsspec' not in sys.modules, 'fsspec imported'"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
