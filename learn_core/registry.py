"""Model registry: one directory per version (safetensors + JSON manifest) and a "current" pointer.

Layout under the root::

    versions/<version>/model.safetensors   weights (shared tower weights stored once)
    versions/<version>/manifest.json       config, content model, data window, metrics, lineage
    CURRENT                                the live version id (replaced atomically)

A version directory is written under a temporary name and renamed into place, so a
reader never sees half a model; the pointer is a file replaced with ``os.replace``.
Loading refuses a manifest whose schema, config or content dimension does not match
what this code builds, and (given the running content model's identity) a model trained
on another content model: silently loading mismatched weights would serve garbage.
The manifest's ``serving`` section is the typed serving contract
(``learn_core.contract.ServingConfig``: history length, pairing, content identity).
No pickle anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from learn_core.contract import ServingConfig, check_content
from learn_core.item_text import TEMPLATE_VERSION
from learn_core.settings import cache_dir, load

log = logging.getLogger(__name__)

REGISTRY_SCHEMA = "learnrec-registry-v1"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
CURRENT = "CURRENT"


class RegistrySettings(BaseSettings):
    """Where models live (env prefix ``LEARNREC_REGISTRY_``)."""

    model_config = SettingsConfigDict(env_prefix="LEARNREC_REGISTRY_", extra="forbid")

    root: Path | None = Field(None, description="registry directory; default <cache dir>/registry")


class RegistryError(ValueError):
    """A model cannot be saved, found or loaded as asked."""


@dataclass
class LoadedModel:
    """A loaded version: the ``LearnModel`` (eval mode) and its manifest."""

    version: str
    model: Any
    manifest: dict[str, Any]
    #: The serving contract (``None`` for versions saved before it was recorded).
    serving: ServingConfig | None = None

    @property
    def user_tower(self) -> Any:
        return self.model.user_tower

    @property
    def item_tower(self) -> Any:
        return self.model.item_tower

    @property
    def cvr_head(self) -> Any:
        return self.model.cvr_head


def new_version_id(now: datetime | None = None) -> str:
    """Sortable by creation time, unique across processes."""
    now = now or datetime.now(UTC)
    return f"m{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


class ModelRegistry:
    def __init__(self, root: Path | str | None = None) -> None:
        if root is None:
            root = load(RegistrySettings).root or cache_dir() / "registry"
        self.root = Path(root).expanduser()
        (self.root / "versions").mkdir(parents=True, exist_ok=True)

    def _dir(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise RegistryError(f"bad version id {version!r}")
        return self.root / "versions" / version

    def versions(self) -> list[str]:
        d = self.root / "versions"
        return sorted(p.name for p in d.iterdir() if (p / MANIFEST).exists())

    def save(
        self,
        model: Any,
        *,
        content_model: str,
        data_window: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        parent_version: str | None = None,
        template_version: str = TEMPLATE_VERSION,
        serving: ServingConfig | None = None,
        **extra: Any,
    ) -> str:
        """Store ``model`` (a ``LearnModel``) as a new, unpromoted version; returns its id.

        ``content_model`` is the content model's identity (``learn_core.embedding.
        identity``); ``serving``, when given, must name the same one.
        """
        if serving is not None and serving.content_model != content_model:
            raise RegistryError(
                f"serving contract names content model {serving.content_model!r}, "
                f"the save call {content_model!r}"
            )
        from safetensors.torch import save_model

        from learn_core.models.towers import TOWER_SCHEMA

        version = new_version_id()
        cfg = model.cfg.to_dict()
        manifest = {
            "schema": REGISTRY_SCHEMA,
            "version": version,
            "config_schema": TOWER_SCHEMA,
            "config": cfg,
            "content_model": content_model,
            "content_dim": int(cfg["tower"]["content_dim"]),
            "template_version": template_version,
            "serving": None if serving is None else serving.to_dict(),
            "data_window": data_window or {},
            "metrics": metrics or {},
            "parent_version": parent_version,
            "created_at": datetime.now(UTC).isoformat(),
            "extra": extra,
        }
        tmp = self.root / "versions" / f".tmp-{version}"
        tmp.mkdir(parents=True)
        try:
            save_model(model, str(tmp / WEIGHTS))  # de-duplicates the shared tower weights
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            os.replace(tmp, self._dir(version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info(
            "saved model %s (content %s, dim %d)", version, content_model, manifest["content_dim"]
        )
        return version

    def manifest(self, version: str) -> dict[str, Any]:
        path = self._dir(version) / MANIFEST
        if not path.exists():
            raise RegistryError(f"no model version {version!r} in {self.root}")
        return json.loads(path.read_text())

    def load(
        self,
        version: str,
        *,
        expect_content_dim: int | None = None,
        expect_content: str | None = None,
    ) -> LoadedModel:
        """Load a version, refusing a manifest that this code cannot trust.

        ``expect_content``: the running content model's identity; a model trained on
        another one is refused (``ContentMismatch``, naming both).
        """
        from safetensors.torch import load_model

        from learn_core.models.learn import LearnConfig, LearnModel
        from learn_core.models.towers import TOWER_SCHEMA

        m = self.manifest(version)
        if m.get("schema") != REGISTRY_SCHEMA:
            raise RegistryError(
                f"{version}: registry schema {m.get('schema')!r} != {REGISTRY_SCHEMA!r}"
            )
        if m.get("config_schema") != TOWER_SCHEMA:
            raise RegistryError(
                f"{version}: config schema {m.get('config_schema')!r} != {TOWER_SCHEMA!r} (code)"
            )
        try:
            cfg = LearnConfig.from_dict(m["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"{version}: config does not match the code: {exc}") from None
        if int(m.get("content_dim", -1)) != cfg.tower.content_dim:
            raise RegistryError(
                f"{version}: manifest content_dim {m.get('content_dim')} != config {cfg.tower.content_dim}"
            )
        if expect_content_dim is not None and cfg.tower.content_dim != expect_content_dim:
            raise RegistryError(
                f"{version}: model reads {cfg.tower.content_dim}-d content embeddings, "
                f"the content model makes {expect_content_dim}-d"
            )
        serving = None
        if m.get("serving") is not None:
            try:
                serving = ServingConfig.from_dict(m["serving"])
            except (TypeError, ValueError) as exc:
                raise RegistryError(f"{version}: bad serving contract: {exc}") from None
            if serving.history_len > cfg.tower.max_len:
                raise RegistryError(
                    f"{version}: history_len {serving.history_len} > tower max_len "
                    f"{cfg.tower.max_len}"
                )
        if expect_content is not None:
            check_content(version, m, expect_content, "the running content model")
        model = LearnModel(cfg)
        missing, unexpected = load_model(model, str(self._dir(version) / WEIGHTS), strict=False)
        if missing or unexpected:
            raise RegistryError(
                f"{version}: weights do not fit: missing {missing}, unexpected {unexpected}"
            )
        model.eval()
        return LoadedModel(version, model, m, serving)

    def current_version(self) -> str | None:
        try:
            v = (self.root / CURRENT).read_text().strip()
        except FileNotFoundError:
            return None
        return v or None

    def promote(self, version: str) -> None:
        """Point CURRENT at ``version`` atomically (the version must exist and load)."""
        self.manifest(version)
        tmp = self.root / f".{CURRENT}.{uuid.uuid4().hex}"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.root / CURRENT)
        log.info("current model is now %s", version)
