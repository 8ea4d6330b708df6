"""``learn_fused_holdout``: LEARN fused with SASRec+CE, its weight and cold rule chosen with cold targets.

``learn_fused`` chooses ``alpha`` on the ordinary validation, whose targets are all warm,
so it cannot see what the ID part costs cold items (docs/quality.md, fourth pass). This
model chooses the ID weight *and* the cold rule (``trainers.fusion.COLD_RULES``) on a
selection split (``hold_out_validation_cold``: a further 10% of the warm items held out
of training, so ~10% of validation targets are cold, as on test), with both parts
retrained there by the same recipes. The choice then applies to the parts trained on
the ordinary split; only the score spreads are re-measured on its validation. The test
split is never read to choose.

It costs a second training of both parts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from trainers.evaluation import ScoreFn
from trainers.splits import Split

log = logging.getLogger(__name__)

#: ``train_parts(split) -> (learn scorer, SASRec+CE module, its max length)``
TrainParts = Callable[[Split], tuple[ScoreFn, Any, int]]


def holdout_fusion(
    train_parts: TrainParts,
    content: np.ndarray,
    split: Split,
    seed: int,
    learn: ScoreFn,
    ids: tuple[ScoreFn, Any],
) -> tuple[ScoreFn, dict[str, Any], dict[str, Any]]:
    """The fused scorer on ``split``'s parts, its settings and its validation evidence.

    ``learn`` and ``ids`` are the ordinary split's parts: LEARN's scorer, and SASRec+CE's
    with its cold rows mapped from content, with the map (``fusion.mapped_id_scores``).
    """
    from trainers.fusion import fused_score_fn, mapped_id_scores, select_cold_rule, select_fusion
    from trainers.splits import hold_out_validation_cold, validation_cold_users

    # seed + 1: the draw bench.cold_start uses, so its figures describe the same split
    selection = hold_out_validation_cold(split, 0.1, seed=seed + 1)
    cold_users = validation_cold_users(selection, split)
    log.info(
        "learn_fused_holdout: %d held-out items, %d cold-target validation users; "
        "training both parts on the selection split",
        int((selection.cold & ~split.cold).sum()),
        int(cold_users.sum()),
    )
    sel_learn, sel_sas, sel_len = train_parts(selection)
    sel_ids, _ = mapped_id_scores(sel_sas, sel_len, content, selection.cold)
    chosen, evidence = select_cold_rule(sel_learn, sel_ids, selection, cold_users)
    log.info("learn_fused_holdout: chose cold rule %s, alpha %s", chosen.cold_ids, chosen.alpha)

    id_scores, mapping = ids
    fusion = select_fusion(learn, id_scores, split, (chosen.alpha,), chosen.cold_ids)
    settings = {
        "parts": ["learn", "sasrec_ce"],
        "chosen_on": "selection split (hold_out_validation_cold, 10%, seed + 1)",
        "selection_cold_target_users": int(cold_users.sum()),
        "selection_evidence": evidence,
        "alpha": fusion.alpha,
        "cold_ids": fusion.cold_ids,
        "sd_content": fusion.sd_content,
        "sd_id": fusion.sd_id,
        "ridge_l2": mapping.l2,
    }
    extra = {
        "alpha": fusion.alpha,
        "cold_ids": fusion.cold_ids,
        "valid": {"ndcg@10": fusion.valid_ndcg10[fusion.alpha]},
        "selection_valid_ndcg@10": chosen.valid_ndcg10[chosen.alpha],
    }
    return fused_score_fn(learn, id_scores, split.cold, fusion), settings, extra
