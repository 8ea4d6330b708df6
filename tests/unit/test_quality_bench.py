"""bench.quality: any MovieLens-1M-layout directory loads; targets use the stronger SASRec."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.quality import compute_targets, load_bench_dataset


def _write_ml1m_layout(root: Path, users: int = 6, items: int = 8) -> Path:
    root.mkdir()
    genres = ["Comedy", "Drama|Romance", "Action|Sci-Fi"]
    movies = [f"{i}::Film {i} ({1990 + i})::{genres[i % 3]}" for i in range(1, items + 1)]
    (root / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    lines = []
    for u in range(1, users + 1):
        for k in range(5):
            item = (u + k) % items + 1
            lines.append(f"{u}::{item}::{1 + (u + k) % 5}::{978300000 + 60 * k + u}")
    (root / "ratings.dat").write_text("\n".join(lines) + "\n")
    return root


def test_any_ml1m_layout_directory_loads(tmp_path: Path) -> None:
    ds = load_bench_dataset(str(_write_ml1m_layout(tmp_path / "my-data")), None)
    assert ds.name == "my-data"
    s = ds.summary()
    assert (s["users"], s["items"], s["interactions"]) == (6, 8, 30)
    first = ds.items[0]
    assert first.title == "Film 1" and first.attributes == {"year": "1991"}
    assert first.keywords == ["Drama", "Romance"]
    with pytest.raises(ValueError, match="ratings.dat"):
        load_bench_dataset(str(tmp_path), None)  # no such files: refused by name


def _m(hr: float) -> dict[str, float]:
    return {"hr@10": hr, "train_seconds": 1.0}


def test_targets_use_the_stronger_sasrec_and_name_it() -> None:
    models = {"learn": _m(0.22), "sasrec": _m(0.16), "sasrec_ce": _m(0.20), "learn_id": _m(0.1)}
    slices = {
        "cold": {"learn": {"hr@10": 0.1}},
        "warm": {"learn": {"hr@10": 0.25}, "sasrec_ce": {"hr@10": 0.24}},
    }
    t = compute_targets(models, slices)
    assert t["best_sasrec"] == "sasrec_ce"
    assert t["learn_over_best_sasrec_hr@10"] == pytest.approx(1.1)
    assert t["learn_over_sasrec_hr@10"] == pytest.approx(0.22 / 0.16)
    assert t["learn_cold_over_warm_hr@10"] == pytest.approx(0.4)
    assert t["learn_warm_minus_sasrec_ce_warm_hr@10"] == pytest.approx(0.01)
    models["sasrec"] = _m(0.21)
    assert compute_targets(models, slices)["best_sasrec"] == "sasrec"


def test_learn_validation_winner_reads_validation_only() -> None:
    models = {
        "learn": _m(0.10) | {"valid": {"ndcg@10": 0.12}},
        "learn_hybrid": _m(0.30) | {"valid": {"ndcg@10": 0.11}},
    }
    slices = {
        "cold": {n: {"hr@10": 0.0} for n in models},
        "warm": {n: {"hr@10": 0.2} for n in models},
    }
    assert compute_targets(models, slices)["learn_validation_winner"] == "learn"
    models["learn_hybrid"]["valid"]["ndcg@10"] = 0.13
    assert compute_targets(models, slices)["learn_validation_winner"] == "learn_hybrid"


def test_a_fusion_before_its_parts_is_refused_before_any_training() -> None:
    from bench.quality import check_models

    for fused in ("learn_fused", "learn_fused_holdout"):
        with pytest.raises(SystemExit, match=f"{fused} needs learn and sasrec_ce before it"):
            check_models(("learn", fused, "sasrec_ce"))
    with pytest.raises(SystemExit, match="unknown learn_fusd"):
        check_models(("learn", "sasrec_ce", "learn_fusd"))
    check_models(("learn", "sasrec_ce", "learn_fused", "learn_fused_holdout"))


def test_the_holdout_fusion_reports_its_choice_and_evidence() -> None:
    from bench.quality import run
    from trainers.fusion import ALPHAS, COLD_RULES

    report = run("sample", None, models=("learn", "sasrec_ce", "learn_fused_holdout"), quick=True)
    settings = report["settings"]["learn_fused_holdout"]
    assert set(settings["selection_evidence"]) == set(COLD_RULES)
    assert settings["selection_cold_target_users"] > 0
    chosen = settings["selection_evidence"][settings["cold_ids"]]
    assert settings["alpha"] == chosen["alpha"] in ALPHAS
    model = report["models"]["learn_fused_holdout"]
    assert model["cold_ids"] == settings["cold_ids"] and 0.0 <= model["hr@10"] <= 1.0
    assert "learn_fused_holdout_cold_over_warm_hr@10" in report["targets"]
