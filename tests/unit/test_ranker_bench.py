"""bench.ranker's pure parts on tiny hand-made data: labels, time split, point-in-time
statistics and user states, the pandas as-of join against a plain loop, GAUC, LightGBM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.ranker_data import (
    AFTER,
    EVENT_TS,
    labelled_events,
    slices,
    stats_rows,
    time_split,
)
from bench.ranker_join import pandas_join, same_frames
from bench.ranker_model import fit_predict, gauc, metrics
from bench.ranker_vectors import user_states
from learn_core.datasets import Dataset
from learn_core.events import ItemCreated
from trainers.learn import auc

T = pd.Timestamp("2024-03-01", tz="UTC")


def at(minutes: float) -> pd.Timestamp:
    return T + pd.Timedelta(minutes=minutes)


def dataset(rows: list[tuple[str, str, str, float, float]], n_items: int = 6) -> Dataset:
    """``rows``: (user, item, event_type, value, minute)."""
    items = [
        ItemCreated(item_id=f"i{n}", title=f"item {n}", category=f"c{n % 2}")
        for n in range(n_items)
    ]
    df = pd.DataFrame(
        {
            "event_id": [f"e{n}" for n in range(len(rows))],
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "value": [r[3] for r in rows],
            "occurred_at": [at(r[4]) for r in rows],
        }
    )
    return Dataset("tiny", items, df)


def test_ratings_are_exposures_labelled_by_conversion() -> None:
    ds = dataset(
        [("u1", "i0", "rating", 5, 0), ("u1", "i1", "rating", 2, 1), ("u2", "i0", "rating", 4, 2)]
    )
    ev, how = labelled_events(ds)
    assert list(ev["label"]) == [1, 0, 1]
    assert "rating >= 4" in how


def test_purchases_get_sampled_negatives_outside_the_users_items_at_the_same_time() -> None:
    rows = [
        ("u1", "i0", "purchase", np.nan, 0),
        ("u1", "i1", "purchase", np.nan, 5),
        ("u2", "i2", "purchase", np.nan, 3),
    ]
    ev, how = labelled_events(dataset(rows, n_items=8), negatives=3)
    assert (ev["label"] == 1).sum() == 3 and (ev["label"] == 0).sum() == 9
    assert "3 negatives per positive" in how
    neg = ev[ev["label"] == 0]
    assert not neg[neg["user_id"] == "u1"]["item_id"].isin(["i0", "i1"]).any()
    assert not neg[neg["user_id"] == "u2"]["item_id"].isin(["i2"]).any()
    pos_times = set(ev[ev["label"] == 1][EVENT_TS])
    assert set(neg[EVENT_TS]) <= pos_times


def test_time_split_orders_the_periods() -> None:
    ts = pd.Series([at(m) for m in range(100)])
    split = time_split(ts)
    period = split.period(ts)
    assert list(pd.Series(period).value_counts()[["towers", "train", "valid", "test"]]) == [
        60,
        15,
        5,
        20,
    ]
    order = {"towers": 0, "train": 1, "valid": 2, "test": 3}
    ranks = [order[p] for p in period]
    assert ranks == sorted(ranks)


def test_statistics_never_include_the_rows_own_label_nor_its_instant() -> None:
    ev = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u1"],
            "item_id": ["i0", "i1", "i0", "i0", "i2"],
            EVENT_TS: [at(0), at(1), at(1), at(2), at(3)],
            "label": [1, 0, 1, 1, 0],
        }
    )
    user = stats_rows(ev, "user_id")
    item = stats_rows(ev, "item_id", {"i0": "c0", "i1": "c1", "i2": "c0"})
    # u1 at minute 1 has two events: one row with both, stamped after that instant.
    u1 = user[user["user_id"] == "u1"]
    assert list(u1["events"]) == [1, 3, 4] and list(u1["conversions"]) == [1, 2, 2]
    assert (u1[EVENT_TS] == pd.Series([at(0), at(1), at(3)]).add(AFTER).to_numpy()).all()
    joined = pandas_join(ev, {"us": (user, "user_id"), "is": (item, "item_id")})
    # Each row sees only what happened strictly before it.
    assert list(joined["us__events"].fillna(0)) == [0, 1, 1, 0, 3]
    assert list(joined["us__conversions"].fillna(0)) == [0, 1, 1, 0, 2]
    assert list(joined["is__events"].fillna(0)) == [0, 0, 1, 2, 0]
    assert joined["is__category"].tolist()[2] == "c0"
    assert joined["us__last_event_s"].iloc[4] == pytest.approx(at(1).timestamp())


def test_user_states_are_windows_up_to_each_instant() -> None:
    ds = dataset(
        [
            ("u1", "i0", "rating", 5, 0),
            ("u1", "i1", "rating", 5, 1),
            ("u1", "i2", "rating", 5, 1),
            ("u1", "i3", "rating", 5, 2),
            ("u2", "i0", "rating", 5, 0),
        ]
    )
    frame, windows = user_states(ds.interactions, h=2)
    assert list(frame["user_id"]) == ["u1", "u1", "u1", "u2"]
    assert windows == [["i0"], ["i1", "i2"], ["i2", "i3"], ["i0"]]
    assert list(frame[EVENT_TS]) == [at(0) + AFTER, at(1) + AFTER, at(2) + AFTER, at(0) + AFTER]
    # Only the states later rows read: u1 at 1.5 min reads the minute-1 state; u1 at
    # minute 0 reads none (that instant's state is stamped after it); u2 reads its one.
    needed = pd.DataFrame({"user_id": ["u1", "u1", "u2"], EVENT_TS: [at(1.5), at(0), at(9)]})
    few, few_windows = user_states(ds.interactions, h=2, needed=needed)
    assert list(few["user_id"]) == ["u1", "u2"]
    assert few_windows == [["i1", "i2"], ["i0"]]


def test_pandas_join_equals_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    n = 300
    rows = pd.DataFrame(
        {
            "user_id": rng.choice(["a", "b", "c"], n),
            EVENT_TS: [at(float(m)) for m in rng.integers(0, 50, n)],
            "label": rng.integers(0, 2, n),
        }
    )
    feats = pd.DataFrame(
        {
            "user_id": rng.choice(["a", "b", "c", "d"], 80),
            "x": rng.standard_normal(80),
            EVENT_TS: [at(float(m)) for m in rng.integers(0, 50, 80)],
        }
    ).drop_duplicates(["user_id", EVENT_TS], keep="last")
    got = pandas_join(rows, {"v": (feats, "user_id")})
    for r, row in rows.iterrows():
        cand = feats[(feats["user_id"] == row["user_id"]) & (feats[EVENT_TS] <= row[EVENT_TS])]
        want = cand.sort_values(EVENT_TS)["x"].iloc[-1] if len(cand) else np.nan
        assert got.loc[r, "v__x"] == pytest.approx(want, nan_ok=True)
    assert same_frames(got, got.copy(), ["v__x"]) == []
    changed = got.assign(v__x=got["v__x"] + 1)
    assert same_frames(got, changed, ["v__x"]) == ["v__x"]


def test_gauc_weights_users_by_rows_and_skips_one_class_users() -> None:
    users = np.array(["a", "a", "a", "a", "b", "b", "c"])
    labels = np.array([1, 0, 1, 0, 1, 0, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.2, 0.8, 0.5])
    a = auc(labels[:4], scores[:4])  # 0.75
    assert gauc(users, labels, scores) == pytest.approx((a * 4 + 0.0 * 2) / 6)
    m = metrics(users, labels, scores, {"all": np.ones(7, bool)})
    assert m["n"]["all"] == 7 and m["gauc"]["all"] == pytest.approx((a * 4) / 6)


def test_slices_cold_and_tail() -> None:
    before = pd.DataFrame({"item_id": ["x"] * 5 + ["y"] * 3 + ["z"] * 2 + ["w"] + ["v"]})
    test = pd.DataFrame({"item_id": ["x", "y", "w", "new"]})
    s = slices(before, test)
    assert list(s.cold) == [False, False, False, True]
    assert list(s.tail) == [False, True, True, False]  # bottom 4 of 5 items: all but x


def test_lightgbm_finds_a_planted_signal_and_stops_on_validation() -> None:
    pytest.importorskip("lightgbm")
    rng = np.random.default_rng(1)
    n = 3000
    signal = rng.standard_normal(n)
    y = (signal + 0.5 * rng.standard_normal(n) > 0).astype(int)
    period = np.array(["train"] * 2000 + ["valid"] * 400 + ["test"] * 600)
    with_signal = pd.DataFrame({"s": signal, "noise": rng.standard_normal(n)})
    without = pd.DataFrame({"noise": rng.standard_normal(n)})
    good, info = fit_predict(with_signal, y, period, seed=0, rounds=200)
    bad, _ = fit_predict(without, y, period, seed=0, rounds=200)
    assert len(good) == 600 and 1 <= info["best_iteration"] <= 200
    assert auc(y[-600:], good) > 0.85
    assert auc(y[-600:], bad) < 0.6
