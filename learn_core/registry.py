"""Model registry: one directory per version (safetensors + JSON manifest) and a "current" pointer.

Layout under the root (a path, ``file://...`` or ``s3://bucket/prefix``)::

    versions/<version>/model.safetensors   weights (shared tower weights stored once)
    versions/<version>/manifest.json       config, content model, data window, metrics,
                                           lineage, the weights' SHA-256
    CURRENT                                the live version id (replaced atomically)
    PENDING                                the version a switch is about to serve (or
                                           empty): consumers write it too meanwhile
    RETIRED                                JSON {version: when it stopped serving}, for
                                           the purge of its online rows after a grace

A reader never sees half a model: on a file system a version directory is written
under a temporary name and renamed into place, and the pointer is a file replaced with
``os.replace``; on an object store the manifest is uploaded last and the pointer is one
PUT (``learn_core.registry_store``). Several machines share one registry by pointing
``LEARNREC_REGISTRY_ROOT`` at the same bucket. Loading refuses a manifest whose schema,
config or content dimension does not match what this code builds, weights whose digest
is not the manifest's, and (given the running content model's identity) a model trained
on another content model: silently loading mismatched weights would serve garbage.
The manifest's ``serving`` section is the typed serving contract
(``learn_core.contract.ServingConfig``: history length, pairing, content identity).
No pickle anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from learn_core.contract import ServingConfig, check_content
from learn_core.item_text import TEMPLATE_VERSION
from learn_core.registry_store import (
    MANIFEST,
    LocalStore,
    ObjectStore,
    check_root_url,
    is_url,
    open_store,
    sha256_file,
    unmangle,
)
from learn_core.settings import ConfigError, cache_dir, load

log = logging.getLogger(__name__)

REGISTRY_SCHEMA = "learnrec-registry-v1"
WEIGHTS = "model.safetensors"
#: The content-anchored hybrid's ID vocabulary (item id of each ID row), beside the weights.
ID_VOCAB = "ids.json"
CURRENT = "CURRENT"
RETIRED = "RETIRED"
PENDING = "PENDING"


class RegistrySettings(BaseSettings):
    """Where models live (env prefix ``LEARNREC_REGISTRY_``)."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_REGISTRY_", extra="forbid", allow_inf_nan=False
    )

    root: str | None = Field(
        None,
        description="registry directory, file:// or s3://bucket/prefix URL; "
        "default <cache dir>/registry",
    )
    #: S3-compatible endpoint (MinIO, Ceph, moto); unset: AWS, or botocore's own
    #: ``AWS_ENDPOINT_URL``. Credentials are never settings: the standard AWS environment.
    endpoint_url: str | None = None

    @field_validator("root")
    @classmethod
    def _root(cls, v: str | None) -> str | None:
        return check_root_url(v) if v is not None and is_url(v) else v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and (
            urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).hostname
        ):
            raise ValueError("expected http(s)://host[:port]")
        return v

    @model_validator(mode="after")
    def _aws_keys(self) -> RegistrySettings:
        # A half-set key pair would make botocore fall through to another identity.
        if self.root and urlsplit(self.root).scheme in ("s3", "s3a"):
            pair = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            have = [k for k in pair if os.environ.get(k)]
            if len(have) == 1:
                missing = pair[1 - pair.index(have[0])]
                raise ValueError(f"{have[0]} is set but {missing} is not (registry {self.root})")
        return self


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
    """Versions of ``LearnModel`` and the pointer to the live one.

    ``root``: a directory, a ``file://`` URL or an ``s3://bucket/prefix`` URL; None reads
    ``RegistrySettings``. ``root`` is a ``Path`` for a local registry, else the URL.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        endpoint = None
        root = unmangle(root) if root is not None else None
        if root is None or is_url(root):
            s = load(RegistrySettings, **({} if root is None else {"root": root}))
            root, endpoint = s.root or cache_dir() / "registry", s.endpoint_url
        if not is_url(root):
            self.store: LocalStore | ObjectStore = open_store(root)
        else:
            try:  # an unreachable bucket is bad configuration: say which variable
                self.store = open_store(root, endpoint_url=endpoint)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"registry {root} (LEARNREC_REGISTRY_ROOT, endpoint "
                    f"LEARNREC_REGISTRY_ENDPOINT_URL={endpoint}): {exc}"
                ) from exc
        self.root: Path | str = (
            self.store.root if isinstance(self.store, LocalStore) else self.store.location
        )

    @staticmethod
    def _check(version: str) -> str:
        if not version or "/" in version or "\\" in version or version.startswith("."):
            raise RegistryError(f"bad version id {version!r}")
        return version

    def versions(self) -> list[str]:
        return self.store.versions()

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

        version = new_version_id()
        arch = _architecture_of(model)
        vocab = arch.vocab(model)
        if vocab is not None:
            want = (len(vocab), vocab.digest())
            got = None if serving is None else (serving.id_table_rows, serving.id_table_sha256)
            if got != want:
                raise RegistryError(
                    f"a model with {want[0]} ID rows needs a serving contract naming its ID "
                    f"table (id_table_rows={want[0]}, id_table_sha256={want[1][:12]}...), got {got}"
                )
        cfg = model.cfg.to_dict()
        manifest = {
            "schema": REGISTRY_SCHEMA,
            "version": version,
            "config_schema": arch.schema,
            "config": cfg,
            "content_model": content_model,
            "content_dim": arch.content_dim(model.cfg),
            "template_version": template_version,
            "serving": None if serving is None else serving.to_dict(),
            "data_window": data_window or {},
            "metrics": metrics or {},
            "parent_version": parent_version,
            "created_at": datetime.now(UTC).isoformat(),
            "extra": extra,
        }
        with self.store.staging(version) as tmp:
            save_model(model, str(tmp / WEIGHTS))  # de-duplicates the shared tower weights
            manifest["weights_sha256"] = sha256_file(tmp / WEIGHTS)
            if vocab is not None:
                (tmp / ID_VOCAB).write_text(vocab.to_json())
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            self.store.publish(self._check(version), tmp, last=MANIFEST)
        log.info(
            "saved model %s (content %s, dim %d)", version, content_model, manifest["content_dim"]
        )
        return version

    def manifest(self, version: str) -> dict[str, Any]:
        try:
            raw = self.store.read(self._check(version), MANIFEST)
        except FileNotFoundError:
            raise RegistryError(f"no model version {version!r} in {self.root}") from None
        return json.loads(raw)

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

        m = self.manifest(version)
        if m.get("schema") != REGISTRY_SCHEMA:
            raise RegistryError(
                f"{version}: registry schema {m.get('schema')!r} != {REGISTRY_SCHEMA!r}"
            )
        known = architectures()
        arch = known.get(str(m.get("config_schema")))
        if arch is None:
            raise RegistryError(
                f"{version}: config schema {m.get('config_schema')!r} is none of "
                f"{sorted(known)} (code)"
            )
        try:
            cfg = arch.config_from_dict(m["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"{version}: config does not match the code: {exc}") from None
        content_dim = arch.content_dim(cfg)
        if int(m.get("content_dim", -1)) != content_dim:
            raise RegistryError(
                f"{version}: manifest content_dim {m.get('content_dim')} != config {content_dim}"
            )
        if expect_content_dim is not None and content_dim != expect_content_dim:
            raise RegistryError(
                f"{version}: model reads {content_dim}-d content embeddings, "
                f"the content model makes {expect_content_dim}-d"
            )
        serving = None
        if m.get("serving") is not None:
            try:
                serving = ServingConfig.from_dict(m["serving"])
            except (TypeError, ValueError) as exc:
                raise RegistryError(f"{version}: bad serving contract: {exc}") from None
            if serving.history_len > arch.max_len(cfg):
                raise RegistryError(
                    f"{version}: history_len {serving.history_len} > tower max_len "
                    f"{arch.max_len(cfg)}"
                )
        if expect_content is not None:
            check_content(version, m, expect_content, "the running content model")
        model = arch.build(cfg)
        with self.store.local_file(version, WEIGHTS) as path:
            digest = m.get("weights_sha256")  # absent in manifests written before it existed
            if digest is not None and sha256_file(path) != digest:
                raise RegistryError(
                    f"{version}: weights digest {sha256_file(path)[:12]} != manifest "
                    f"{str(digest)[:12]}: not the weights this version was saved with"
                )
            missing, unexpected = load_model(model, str(path), strict=False)
        if missing or unexpected:
            raise RegistryError(
                f"{version}: weights do not fit: missing {missing}, unexpected {unexpected}"
            )
        if arch.vocab(model) is not None:
            self._load_vocab(version, model, serving)
        model.eval()
        return LoadedModel(version, model, m, serving)

    def _load_vocab(self, version: str, model: Any, serving: ServingConfig | None) -> None:
        """Read a hybrid's ID vocabulary and check it against its table and contract."""
        from learn_core.models.anchored import IdVocab

        try:
            vocab = IdVocab.from_json(self.store.read(version, ID_VOCAB).decode())
        except FileNotFoundError:
            raise RegistryError(
                f"{version}: {ID_VOCAB} is missing (the model has ID rows)"
            ) from None
        except ValueError as exc:
            raise RegistryError(f"{version}: bad {ID_VOCAB}: {exc}") from None
        rows = model.cfg.net.n_ids
        want = None if serving is None else (serving.id_table_rows, serving.id_table_sha256)
        if len(vocab) != rows or want != (len(vocab), vocab.digest()):
            raise RegistryError(
                f"{version}: {ID_VOCAB} has {len(vocab)} ids (sha256 {vocab.digest()[:12]}), "
                f"the ID table {rows} rows, the serving contract {want}"
            )
        model.item_tower.vocab = vocab

    def current_version(self) -> str | None:
        v = (self.store.read_pointer(CURRENT) or "").strip()
        return v or None

    def promote(self, version: str) -> None:
        """Point CURRENT at ``version`` atomically (the version must be complete).

        The version it replaces is recorded in ``RETIRED`` with the time, so that its
        online rows are purged after a grace period (``retired``); a re-promoted version
        leaves that list.
        """
        self.manifest(version)
        before = self.current_version()
        self.store.write_pointer(CURRENT, version + "\n")
        log.info("current model is now %s", version)
        retired = {v: t.isoformat() for v, t in self.retired().items() if v != version}
        if before is not None and before != version:
            retired[before] = datetime.now(UTC).isoformat()
        self.store.write_pointer(RETIRED, json.dumps(retired, sort_keys=True) + "\n")

    def mark_pending(self, version: str) -> None:
        """Name the version the next switch serves: writers that follow it write its rows
        beside the current version's until the switch (dual write, docs/deploy.md)."""
        self.manifest(version)
        self.store.write_pointer(PENDING, version + "\n")

    def pending_version(self) -> str | None:
        """The version marked by ``mark_pending``; None when no switch is under way.

        Read it *before* ``current_version``: ``promote`` then ``clear_pending`` make a
        reader that finds no pending version find the new current one."""
        v = (self.store.read_pointer(PENDING) or "").strip()
        return v or None

    def clear_pending(self) -> None:
        self.store.write_pointer(PENDING, "")

    def retired(self) -> dict[str, datetime]:
        """Versions that stopped serving and whose online rows are not purged yet -> when."""
        raw = (self.store.read_pointer(RETIRED) or "").strip()
        if not raw:
            return {}
        return {v: datetime.fromisoformat(t) for v, t in json.loads(raw).items()}

    def forget_retired(self, versions: list[str]) -> None:
        """Drop ``versions`` from ``RETIRED`` (their online rows are gone)."""
        drop = set(versions)
        keep = {v: t.isoformat() for v, t in self.retired().items() if v not in drop}
        self.store.write_pointer(RETIRED, json.dumps(keep, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Architecture:
    """How the registry builds, checks and describes one kind of model."""

    schema: str
    config_from_dict: Any  # dict -> config (strict)
    build: Any  # config -> module
    content_dim: Any  # config -> int
    max_len: Any  # config -> int (the user tower's positions)
    vocab: Any  # model -> IdVocab | None


def _learn_arch() -> Architecture:
    from learn_core.models.learn import LearnConfig, LearnModel
    from learn_core.models.towers import TOWER_SCHEMA

    return Architecture(
        TOWER_SCHEMA,
        LearnConfig.from_dict,
        LearnModel,
        lambda c: int(c.tower.content_dim),
        lambda c: int(c.tower.max_len),
        lambda m: None,
    )


def _anchored_arch() -> Architecture:
    from learn_core.models.anchored import ANCHORED_SCHEMA, AnchoredModel, AnchoredModelConfig

    return Architecture(
        ANCHORED_SCHEMA,
        AnchoredModelConfig.from_dict,
        AnchoredModel,
        lambda c: int(c.net.content_dim),
        lambda c: int(c.net.max_len),
        lambda m: m.item_tower.vocab if m.cfg.net.n_ids else None,
    )


def architectures() -> dict[str, Architecture]:
    """``config_schema`` -> ``Architecture`` of every model kind this code loads."""
    return {a.schema: a for a in (_learn_arch(), _anchored_arch())}


def _architecture_of(model: Any) -> Architecture:
    from learn_core.models.anchored import AnchoredModel

    return (_anchored_arch if isinstance(model, AnchoredModel) else _learn_arch)()
