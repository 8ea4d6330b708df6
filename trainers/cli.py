"""``learnrec train`` (flags -> ``trainers.train.train``) and ``learnrec evaluate``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from learn_core.settings import load
from trainers.train import ProductRecipeSettings

log = logging.getLogger(__name__)


class TrainSettings(ProductRecipeSettings):
    """Offline training defaults (env prefix ``LEARNREC_TRAIN_``); flags override them.

    The recipe is the product's named one unless ``LEARNREC_TRAIN_RECIPE`` says otherwise.
    """

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_TRAIN_", extra="forbid", allow_inf_nan=False
    )

    dataset: str = Field("sample", description="sample | ml-100k | ml-1m-subset")
    data: Path | None = Field(
        None, description="data directory (MovieLens); default: shipped sample"
    )
    epochs: int = Field(20, ge=1, le=1000)
    cvr_epochs: int = Field(
        3, ge=0, le=1000, description="separate CVR stage on frozen towers (0 = skip)"
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed")
    threads: int | None = Field(None, ge=1, le=1024, description="torch CPU threads")
    nproc: int = Field(
        1,
        ge=1,
        le=256,
        description="training processes: 1 trains in this process; N > 1 launches torchrun "
        "--nproc_per_node N (DDP over gloo: the loop trains on CPU; content-anchored recipes)",
    )


def add_cli(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train", help="train LEARN (towers + CVR head) on a data set and register it"
    )
    t.add_argument("--dataset", help="sample | ml-100k | ml-1m-subset")
    t.add_argument("--data", type=Path, help="data directory")
    t.add_argument("--epochs", type=int)
    t.add_argument("--registry", type=Path, help="registry root (default LEARNREC_REGISTRY_ROOT)")
    t.add_argument("--promote", action="store_true", help="make the new version current")
    t.add_argument(
        "--nproc", type=int, help="train on N processes under torchrun (DDP; rank 0 saves)"
    )
    t.set_defaults(func=_train)
    e = sub.add_parser("evaluate", help="leave-one-out test metrics of a registered model")
    e.add_argument("--dataset", help="sample | ml-100k | ml-1m-subset")
    e.add_argument("--data", type=Path)
    e.add_argument("--registry", type=Path)
    e.add_argument("--version", help="default: current")
    e.set_defaults(func=_evaluate)


def _settings(args: argparse.Namespace) -> TrainSettings:
    over = {
        k: getattr(args, k)
        for k in ("dataset", "data", "epochs", "nproc")
        if getattr(args, k, None) is not None
    }
    return load(TrainSettings, **over)


def _prepare(s: TrainSettings) -> tuple[Any, Any, Any, Any]:
    import torch

    from learn_core.datasets import load_dataset
    from learn_core.embedding.hf import HFEmbedder
    from trainers.content_cache import content_matrix
    from trainers.splits import leave_one_out

    if s.threads:
        torch.set_num_threads(s.threads)
    ds = load_dataset(s.dataset, s.data)
    split = leave_one_out(ds, cold_fraction=0.1, seed=s.seed)
    embedder = HFEmbedder()
    return ds, split, embedder, content_matrix(ds.items, embedder)


def _rank_flags(args: argparse.Namespace) -> list[str]:
    """The flags each ``torchrun`` rank gets: these, less ``--nproc`` (env vars pass on)."""
    out = [f"--{k}={getattr(args, k)}" for k in ("dataset", "data", "epochs", "registry")
           if getattr(args, k, None) is not None]  # fmt: skip
    return out + (["--promote"] if args.promote else [])


def _train(args: argparse.Namespace) -> int:
    from trainers import distributed
    from trainers.train import TrainConfig, train

    s = _settings(args)
    recipe = s.effective_recipe()
    if s.nproc > 1 and not distributed.under_torchrun():
        if recipe.arch != "anchored":
            print(f"--nproc {s.nproc}: recipe {recipe.name!r} trains in one process only; "
                  "data-parallel training trains the content-anchored recipes", file=sys.stderr)  # fmt: skip
            return 2
        try:
            distributed.run_torchrun(s.nproc, ["train", *_rank_flags(args)])
        except distributed.DistributedTrainingFailed as exc:
            print(f"train failed: {exc}", file=sys.stderr)
            return 1
        return 0
    dist = distributed.from_env()
    try:
        res = train(
            TrainConfig(
                dataset=s.dataset,
                data=s.data,
                epochs=s.epochs,
                cvr_epochs=s.cvr_epochs,
                seed=s.seed,
                threads=s.threads,
                recipe=recipe,
                registry=args.registry,
                promote=args.promote,
            ),
            dist=dist,
        )
    finally:
        distributed.close(dist)
    if res is None:  # a rank other than 0: rank 0 reports
        return 0
    print(
        json.dumps(
            {
                "version": res.version,
                "promoted": res.promoted,
                "recipe": res.recipe,
                "test": res.test["all"],
                "cvr": res.cvr,
            },
            indent=2,
        )
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from learn_core.contract import ContentMismatch
    from learn_core.embedding.identity import content_identity
    from learn_core.registry import ModelRegistry
    from learn_core.serving import as_serving
    from trainers.evaluation import eval_loop, served_score_fn, summarise

    s = _settings(args)
    reg = ModelRegistry(args.registry)
    version = args.version or reg.current_version()
    if version is None:  # before any embedding time is spent
        print("no current model; pass --version or train one (learnrec train --promote)")
        return 2
    ds, split, embedder, content = _prepare(s)
    try:
        loaded = reg.load(
            version, expect_content_dim=embedder.dim, expect_content=content_identity(embedder)
        )
    except ContentMismatch as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    # The serving contract's window; versions saved before it was recorded say it in extra.
    h = (
        loaded.serving.history_len
        if loaded.serving is not None
        else int(
            loaded.manifest.get("extra", {}).get("history_len", loaded.model.cfg.tower.max_len)
        )
    )
    model = as_serving(version, loaded)
    test = summarise(eval_loop(served_score_fn(model, content, split.item_ids, h), split), split)
    print(json.dumps({"version": version, "dataset": ds.name, **test}, indent=2, default=float))
    return 0
