"""The retraining job: point-in-time training data, towers + CVR head, evaluate, promote.

``retrain(handle, registry, settings) -> RetrainReport`` runs, in order:

1. **Training data, point in time** (``trainers.jobs.training_data``): the offline log
   before the held-out window, joined with the content each item had at the time.
2. **Towers, then the CVR head** (``trainers.product.fit``: LEARN's towers or the
   content-anchored hybrid, then the separate CVR stage), with the product's named recipe (``trainers.recipe.PRODUCT_RECIPE``) unless
   ``LEARNREC_RETRAIN_RECIPE`` / ``_PAIRING`` / ``_ITEM_VARIANT`` say otherwise.
3. **Evaluate** candidate and current model on the held-out recent window
   (``trainers.jobs.holdout``: the offline evaluator's full ranking, HR@10; popularity
   on the same rows for reference).
4. **Promote** when ``candidate >= current - tolerance`` (or there is no current model):
   save with its serving contract (``trainers.train.save_version``), backfill every item
   and user under the new version beside the serving version's rows and replay the
   logs' tail, mark it pending so that the consumers write it too, wait
   ``catchup_delay_s``, replay the tail once more and switch the pointer
   (``trainers.jobs.switch``: no gap); purge the online rows of versions
   replaced more than ``retire_grace_s`` ago. Otherwise keep the current model and log
   why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from feature_repo.schema import INTERACTION_LOG
from learn_core.contract import ServingConfig
from learn_core.serving import as_serving
from trainers.jobs.holdout import eval_set, evaluate_model, evaluate_popularity, should_promote
from trainers.jobs.training_data import holdout_start, point_in_time_frame, training_split
from trainers.recipe import RECIPES
from trainers.train import ProductRecipeSettings, recipe_record, save_version, serving_contract

if TYPE_CHECKING:
    from feature_repo.store import FeatureStoreHandle
    from learn_core.registry import ModelRegistry

log = logging.getLogger(__name__)


class RetrainSettings(ProductRecipeSettings):
    """Retraining job (env prefix ``LEARNREC_RETRAIN_``): the product's named recipe by default."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_RETRAIN_", extra="forbid", allow_inf_nan=False
    )

    holdout_fraction: float = Field(
        0.1, gt=0, lt=0.9, description="newest share of interactions held out for evaluation"
    )
    tolerance: float = Field(0.005, ge=0, le=1, description="HR@10 the candidate may lose")
    epochs: int = Field(6, ge=1, le=1000)
    patience: int = Field(2, ge=1, le=100)
    batch_size: int = Field(128, ge=1, le=65_536)
    history_len: int = Field(50, ge=1, le=64, description="H; same as the interaction consumer")
    target_len: int | None = Field(
        None, ge=1, le=64, description="T: items after each position (unset: the recipe's)"
    )
    windows_per_user: int = Field(8, ge=1, le=10_000)
    cvr_epochs: int = Field(3, ge=1, le=1000)
    min_interactions: int = Field(
        50, ge=1, le=1_000_000_000, description="fewer: the job does nothing"
    )
    catchup_delay_s: float = Field(
        6.0,
        ge=0,
        le=3600,
        description="wait between marking a version pending and its last catch-up and "
        "switch: must exceed every consumer's pointer check period",
    )
    retire_grace_s: float = Field(
        600.0,
        ge=0,
        le=2_592_000,
        description="a replaced version's online rows are purged after this (at most 30 days)",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed")
    torch_threads: int = Field(2, ge=1, le=64)
    nproc: int = Field(
        1,
        ge=1,
        le=256,
        description="training processes: 1 trains in the job's process; N > 1 runs the "
        "training step under torchrun --nproc_per_node N (DDP; content-anchored recipes); "
        "gate, backfill and switch are the same",
    )

    @model_validator(mode="after")
    def _nproc_trains_anchored(self) -> RetrainSettings:
        if self.nproc > 1 and RECIPES[self.recipe].arch != "anchored":
            raise ValueError(
                f"LEARNREC_RETRAIN_NPROC={self.nproc}: recipe {self.recipe!r} trains LEARN's "
                "towers, in one process only; torchrun trains the content-anchored recipes"
            )
        return self


@dataclass
class RetrainReport:
    cutoff: str
    window_end: str
    train_interactions: int
    dropped_no_content: int
    eval_users: int
    candidate: dict[str, float]
    current: dict[str, float] | None
    popularity: dict[str, float]
    promoted: bool
    reason: str
    version: str | None = None
    current_version: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    backfill: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def retrain(
    handle: FeatureStoreHandle,
    registry: ModelRegistry,
    settings: RetrainSettings | None = None,
    *,
    progress: bool = False,
    force: bool = False,
) -> RetrainReport | None:
    """Run the whole job once; ``None`` when there is too little data to train on.

    ``force`` promotes even a worse candidate (the demo's first model, operators).
    """
    import torch

    from trainers.jobs.backfill import backfill, purge_retired
    from trainers.jobs.switch import switch
    from trainers.learn import CVRStageConfig
    from trainers.product import fit

    s = settings or RetrainSettings()
    torch.set_num_threads(s.torch_threads)
    secs: dict[str, float] = {}
    t0 = time.monotonic()
    if registry.pending_version() is not None:  # left by a run that died mid-switch
        registry.clear_pending()
    purge_retired(handle, registry, s.retire_grace_s)  # versions replaced by earlier runs
    log_df = handle.read_offline(INTERACTION_LOG.name)
    if len(log_df) < s.min_interactions:
        log.info("retrain skipped: %d interactions < %d", len(log_df), s.min_interactions)
        return None
    end = pd.to_datetime(log_df["event_timestamp"], utc=True).max().to_pydatetime()
    end = end + pd.Timedelta(microseconds=1)
    cutoff = holdout_start(log_df, s.holdout_fraction)
    data = point_in_time_frame(handle, log_df, cutoff)
    split = training_split(data)
    ev = eval_set(handle, log_df, cutoff, end, s.history_len)
    # The contract is built (and validated) before any training time is spent.
    recipe = s.effective_recipe()
    ServingConfig(s.history_len, recipe.pairing, data.content_model)  # checked before training
    secs["data"] = time.monotonic() - t0
    log.info(
        "retrain: %d interactions before %s (%d without content yet), %d tokens, %d eval users",
        len(data.frame),
        cutoff.isoformat(),
        data.dropped_no_content,
        len(data.token_items),
        len(ev.users),
    )

    t1 = time.monotonic()

    def configure(cfg: Any) -> Any:
        """The recipe's model and loss; the job's own budget and the serving window H."""
        if recipe.arch == "anchored":
            cfg.net.max_len = s.history_len
            cfg.batch_size, cfg.patience, cfg.eval_every = s.batch_size, s.patience, 1
            return cfg
        return replace(
            cfg,
            history_len=s.history_len,
            target_len=s.target_len or recipe.target_len,
            windows_per_user=s.windows_per_user,
            batch_size=s.batch_size,
            patience=s.patience,
        )

    cvr_cfg = CVRStageConfig(epochs=s.cvr_epochs, seed=s.seed)
    if s.nproc > 1:  # the same loop on N ranks; a failed rank raises before anything is saved
        from trainers.torchrun_fit import fit_under_torchrun

        cfg = configure(recipe.train_config(s.epochs, s.seed))  # type: ignore[union-attr]
        result, cvr = fit_under_torchrun(
            s.nproc, recipe, split, data.matrix, data.token_items, cfg, cvr_cfg,  # type: ignore[arg-type]
            content_model=data.content_model,
        )  # fmt: skip
    else:
        result = fit(
            recipe,
            split,
            data.matrix,
            epochs=s.epochs,
            seed=s.seed,
            row_items=data.token_items,
            configure=configure,
        )
        cvr = result.cvr_stage(split, cvr_cfg)
    secs["train"] = time.monotonic() - t1

    t2 = time.monotonic()
    cand_metrics = evaluate_model(as_serving("candidate", result.model), ev, s.history_len)
    cur_version = registry.current_version()
    cur_metrics = None
    if cur_version is not None:
        cur_metrics = evaluate_model(
            as_serving(cur_version, registry.load(cur_version)), ev, s.history_len
        )
    pop = evaluate_popularity(data.frame, ev)
    promote, reason = should_promote(
        cand_metrics["hr@10"], None if cur_metrics is None else cur_metrics["hr@10"], s.tolerance
    )
    if force and not promote:
        promote, reason = True, f"forced ({reason})"
    secs["evaluate"] = time.monotonic() - t2
    report = RetrainReport(
        cutoff=cutoff.isoformat(),
        window_end=end.isoformat(),
        train_interactions=len(data.frame),
        dropped_no_content=data.dropped_no_content,
        eval_users=len(ev.users),
        candidate=cand_metrics
        | {"valid_auc_cvr": cvr["valid_auc"], "best_epoch": result.best_epoch},
        current=cur_metrics,
        popularity=pop,
        promoted=promote,
        reason=reason,
        current_version=cur_version,
        recipe=recipe_record(recipe),
    )
    log.info("retrain decision: %s", reason)
    if not promote:
        report.seconds = secs
        return report

    version = save_version(
        registry,
        result.model,
        serving_contract(result.model, s.history_len, recipe.pairing, data.content_model),
        data_window={"end": cutoff.isoformat(), "eval_end": end.isoformat()},
        metrics={"holdout": cand_metrics, "cvr": cvr, "valid": result.valid},
        parent_version=cur_version,
        recipe=recipe,
        train_interactions=len(data.frame),
        train_processes=s.nproc,
    )
    report.version = version
    t3 = time.monotonic()
    serving = as_serving(version, registry.load(version))
    from trainers.jobs.ray_backfill import engine_from_settings

    engine = engine_from_settings(str(registry.root), serving, s.history_len)
    bf = backfill(handle, serving, history_len=s.history_len, progress=progress, engine=engine)
    report.backfill = asdict(bf)
    secs["backfill"] = time.monotonic() - t3
    t4 = time.monotonic()
    fixed = switch(
        handle,
        registry,
        serving,
        since=pd.Timestamp(bf.watermark),
        wait_s=s.catchup_delay_s,
        history_len=s.history_len,
    )
    secs["switch"] = time.monotonic() - t4
    log.info("promoted %s (was %s)", version, cur_version)
    report.backfill["caught_up"] += fixed
    report.backfill["purged"] = purge_retired(handle, registry, s.retire_grace_s)
    secs["total"] = time.monotonic() - t0
    report.seconds = secs
    return report
