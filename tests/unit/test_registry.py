"""Model registry: round trip, the current pointer, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from learn_core.models.learn import LearnConfig, LearnModel
from learn_core.models.towers import TowerConfig
from learn_core.registry import MANIFEST, ModelRegistry, RegistryError


@pytest.fixture
def model() -> LearnModel:
    torch.manual_seed(0)
    return LearnModel(
        LearnConfig(tower=TowerConfig(content_dim=16, d_model=16, n_heads=2, max_len=8))
    )


def test_round_trip_and_pointer(tmp_path: Path, model: LearnModel) -> None:
    reg = ModelRegistry(tmp_path)
    assert reg.current_version() is None
    v1 = reg.save(
        model,
        content_model="mini@item-text-v1",
        metrics={"hr@10": 0.25},
        data_window={"end": "2024-01-01"},
    )
    v2 = reg.save(model, content_model="mini@item-text-v1", parent_version=v1)
    assert reg.versions() == sorted([v1, v2]) and v1 != v2
    assert reg.current_version() is None  # saving does not promote
    reg.promote(v1)
    assert reg.current_version() == v1
    reg.promote(v2)
    assert reg.current_version() == v2
    loaded = reg.load(v2)
    assert loaded.manifest["parent_version"] == v1
    assert loaded.manifest["content_model"] == "mini@item-text-v1"
    assert loaded.manifest["content_dim"] == 16
    for k, t in model.state_dict().items():
        assert torch.equal(t, loaded.model.state_dict()[k]), k
    x = torch.randn(2, 5, 16)
    mask = torch.ones(2, 5, dtype=torch.bool)
    model.eval()
    torch.testing.assert_close(
        model.user_tower.encode_histories(x, mask), loaded.user_tower.encode_histories(x, mask)
    )
    # No pickle: the weights are safetensors and the manifest is JSON.
    files = sorted(p.name for p in (tmp_path / "versions" / v2).iterdir())
    assert files == ["manifest.json", "model.safetensors"]


def _edit(reg: ModelRegistry, version: str, **changes: object) -> None:
    path = reg.root / "versions" / version / MANIFEST
    m = json.loads(path.read_text())
    m.update(changes)
    path.write_text(json.dumps(m))


def test_refusals(tmp_path: Path, model: LearnModel) -> None:
    reg = ModelRegistry(tmp_path)
    v = reg.save(model, content_model="mini")
    with pytest.raises(RegistryError, match="make 384-d|makes 384-d"):
        reg.load(v, expect_content_dim=384)
    with pytest.raises(RegistryError, match="no model version"):
        reg.load("m-missing")
    with pytest.raises(RegistryError, match="bad version"):
        reg.load("../etc")
    with pytest.raises(RegistryError, match="no model version"):
        reg.promote("m-missing")

    _edit(reg, v, config_schema="learn-towers-v0")
    with pytest.raises(RegistryError, match="config schema"):
        reg.load(v)
    v = reg.save(model, content_model="mini")
    cfg = reg.manifest(v)["config"]
    cfg["tower"]["unknown_knob"] = 1
    _edit(reg, v, config=cfg)
    with pytest.raises(RegistryError, match="does not match the code"):
        reg.load(v)
    v = reg.save(model, content_model="mini")
    _edit(reg, v, content_dim=768)
    with pytest.raises(RegistryError, match="content_dim"):
        reg.load(v)
    v = reg.save(model, content_model="mini")
    _edit(reg, v, schema="other-registry")
    with pytest.raises(RegistryError, match="registry schema"):
        reg.load(v)


def test_serving_contract_is_typed_saved_and_checked(tmp_path: Path, model: LearnModel) -> None:
    from learn_core.contract import ContentMismatch, ServingConfig
    from learn_core.serving import ModelCache

    for bad in (
        dict(history_len=0, pairing="window", content_model="a@1"),
        dict(history_len=8, pairing="windows", content_model="a@1"),
        dict(history_len=8, pairing="window", content_model=""),
        dict(history_len=8.0, pairing="window", content_model="a@1"),
    ):
        with pytest.raises(ValueError):
            ServingConfig(**bad)  # type: ignore[arg-type]
    reg = ModelRegistry(tmp_path)
    serving = ServingConfig(history_len=6, pairing="sliding", content_model="mini@aaaa")
    with pytest.raises(RegistryError, match="names content model"):
        reg.save(model, content_model="other@bbbb", serving=serving)
    v = reg.save(model, content_model="mini@aaaa", serving=serving)
    loaded = reg.load(v, expect_content="mini@aaaa")
    assert loaded.serving == serving
    assert loaded.manifest["serving"] == {
        "history_len": 6,
        "pairing": "sliding",
        "content_model": "mini@aaaa",
        "id_table_rows": 0,  # content-only towers: no ID table
        "id_table_sha256": None,
    }
    # Beside another content model of the same width: refused, naming both identities.
    with pytest.raises(ContentMismatch, match=r"'mini@aaaa'.*'mini@cccc'"):
        reg.load(v, expect_content="mini@cccc")
    reg.promote(v)
    with pytest.raises(ContentMismatch, match=r"'mini@aaaa'.*'mini@cccc'"):
        ModelCache(reg, expect_content="mini@cccc").current()
    assert ModelCache(reg, expect_content="mini@aaaa").current().content_model == "mini@aaaa"
    # A window longer than the tower reads is a broken contract, refused at load.
    _edit(reg, v, serving={"history_len": 9, "pairing": "window", "content_model": "mini@aaaa"})
    with pytest.raises(RegistryError, match="history_len 9 > tower max_len 8"):
        reg.load(v)
