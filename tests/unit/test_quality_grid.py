"""bench.quality_grid: overrides reach the SASRec+CE settings; unknown names are refused."""

from __future__ import annotations

import pytest

from bench.quality import sasrec_ce_bench_config
from bench.quality_grid import apply_sasrec_overrides


def test_sasrec_overrides_set_fields_and_refuse_unknown_names() -> None:
    cfg = sasrec_ce_bench_config(seed=0)
    apply_sasrec_overrides(cfg, {"lr": 5e-4, "max_len": 50})
    assert (cfg.lr, cfg.max_len, cfg.loss) == (5e-4, 50, "ce")
    with pytest.raises(ValueError, match="no_such"):
        apply_sasrec_overrides(cfg, {"no_such": 1})
