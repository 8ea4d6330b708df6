"""The retraining job's training step on N processes: a hand-off directory and ``torchrun``.

The job has already read its point-in-time data; the ranks must train on exactly that. So
``fit_under_torchrun`` writes the split, the content matrix and the resolved training
config to a directory (safetensors + JSON, never pickle), runs ``python -m trainers
fit-job DIR`` under ``torchrun`` (each rank reads the same directory; one machine), and
reads back what rank 0 wrote: the trained model as a version of a scratch registry in that
directory (the registry's own save/load and checks), its validation figures and the CVR
stage's. The job then gates, saves, backfills and switches as with one process. Any rank
that fails makes the launch raise (``DistributedTrainingFailed``) before anything is saved.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from trainers.anchored import AnchoredTrainConfig, anchored_cvr_stage, train_anchored
from trainers.distributed import DistContext, run_torchrun
from trainers.learn import CVRStageConfig
from trainers.product import Fitted
from trainers.recipe import AnchoredRecipe
from trainers.splits import Split

log = logging.getLogger(__name__)

TENSORS, META, RESULT, SCRATCH = "inputs.safetensors", "inputs.json", "result.json", "registry"


def _ragged(prefix: str, arrays: list[np.ndarray], dtype: Any) -> dict[str, np.ndarray]:
    sizes = np.array([len(a) for a in arrays], np.int64)
    flat = np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)
    return {f"{prefix}_flat": np.ascontiguousarray(flat), f"{prefix}_sizes": sizes}


def _unragged(t: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return np.split(t[f"{prefix}_flat"], np.cumsum(t[f"{prefix}_sizes"])[:-1])


def write_job(
    root: Path,
    split: Split,
    content: np.ndarray,
    row_items: list[str],
    cfg: AnchoredTrainConfig,
    cvr: CVRStageConfig,
    *,
    content_model: str,
    pairing: str,
) -> None:
    """Everything a rank needs to train, as the job resolved it."""
    tensors = {
        "content": np.ascontiguousarray(content, np.float32),
        "valid": split.valid.astype(np.int64),
        "test": split.test.astype(np.int64),
        "cold": split.cold.astype(bool),
        "n_events": split.n_events.astype(np.int64),
        **_ragged("train", split.train, np.int64),
        **_ragged("train_conv", split.train_conv, bool),
    }
    if split.seen is not None and split.seen_before_valid is not None:
        tensors |= _ragged("seen", split.seen, np.int64)
        tensors["seen_before_valid"] = split.seen_before_valid.astype(np.int64)
    save_file(tensors, str(root / TENSORS))
    meta = {
        "item_ids": split.item_ids,
        "users": split.users,
        "row_items": row_items,
        "train_config": cfg.to_dict(),
        "cvr": asdict(cvr),
        "content_model": content_model,
        "pairing": pairing,
    }
    (root / META).write_text(json.dumps(meta))


def read_job(
    root: Path,
) -> tuple[Split, np.ndarray, list[str], AnchoredTrainConfig, CVRStageConfig, dict[str, Any]]:
    from learn_core.models.anchored import AnchoredConfig

    t = load_file(str(root / TENSORS))
    meta = json.loads((root / META).read_text())
    seen = _unragged(t, "seen") if "seen_flat" in t else None
    split = Split(
        item_ids=meta["item_ids"],
        users=meta["users"],
        train=_unragged(t, "train"),
        train_conv=_unragged(t, "train_conv"),
        valid=t["valid"],
        test=t["test"],
        cold=t["cold"],
        n_events=t["n_events"],
        seen=seen,
        seen_before_valid=t.get("seen_before_valid"),
    )
    raw = dict(meta["train_config"])
    cfg = AnchoredTrainConfig(net=AnchoredConfig(**raw.pop("net")), **raw)
    return split, t["content"], meta["row_items"], cfg, CVRStageConfig(**meta["cvr"]), meta


def run_job(root: Path, dist: DistContext) -> None:
    """One rank's part (``python -m trainers fit-job DIR``): train; rank 0 also runs the
    CVR stage and writes the model and figures back."""
    from learn_core.registry import ModelRegistry
    from trainers.train import serving_contract

    split, content, row_items, cfg, cvr_cfg, meta = read_job(root)
    res = train_anchored(cfg, split, content, row_items, dist)
    if not dist.main:
        return
    cvr = anchored_cvr_stage(res, split, cvr_cfg)
    serving = serving_contract(
        res.model, res.model.cfg.net.max_len, meta["pairing"], meta["content_model"]
    )
    version = ModelRegistry(root / SCRATCH).save(
        res.model, content_model=meta["content_model"], serving=serving
    )
    out = {
        "version": version,
        "best_epoch": res.best_epoch,
        "valid": res.valid,
        "history": res.history,
        "train_seconds": res.train_seconds,
        "cvr": cvr,
        "world": dist.world,
    }
    (root / RESULT).write_text(json.dumps(out, default=float))


def fit_under_torchrun(
    nproc: int,
    recipe: AnchoredRecipe,
    split: Split,
    content: np.ndarray,
    row_items: list[str],
    cfg: AnchoredTrainConfig,
    cvr: CVRStageConfig,
    *,
    content_model: str,
    timeout_s: float | None = None,
) -> tuple[Fitted, dict[str, Any]]:
    """Train ``cfg`` on ``nproc`` ranks; the trained ``Fitted`` and the CVR stage's figures."""
    from learn_core.registry import ModelRegistry

    with tempfile.TemporaryDirectory(prefix="learnrec-torchrun-") as tmp:
        root = Path(tmp)
        write_job(
            root, split, content, row_items, cfg, cvr,
            content_model=content_model, pairing=recipe.pairing,
        )  # fmt: skip
        run_torchrun(nproc, ["fit-job", str(root)], timeout_s)
        out = json.loads((root / RESULT).read_text())
        model = ModelRegistry(root / SCRATCH).load(out["version"]).model
    log.info("trained on %d processes in %.1f s", out["world"], out["train_seconds"])
    fitted = Fitted(
        recipe,
        model,
        int(out["best_epoch"]),
        out["valid"],
        out["history"],
        float(out["train_seconds"]),
        model.cfg.net.max_len,
        cfg.to_dict() | {"nproc": nproc},
    )
    return fitted, out["cvr"]
