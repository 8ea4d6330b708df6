"""Parquet offline log: appends never rewrite, replays never duplicate, crashes never lose."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from feature_repo.offline_log.parquet import ParquetOfflineLog

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DIM = 8


def batch(ids: list[str], *, start: int = 0, version: str = "m1", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "item_id": ids,
            "embedding": list(rng.standard_normal((len(ids), DIM)).astype(np.float32)),
            "model_version": version,
            "event_timestamp": [T0 + timedelta(minutes=start + i) for i in range(len(ids))],
        }
    )


@pytest.fixture
def log(tmp_path: Path) -> ParquetOfflineLog:
    return ParquetOfflineLog(tmp_path / "offline")


def test_append_then_read_round_trips_vectors(log: ParquetOfflineLog) -> None:
    df = batch(["a", "b", "c"])
    assert log.append("item_content_embedding", df) == 3
    out = log.read_offline("item_content_embedding")
    assert list(out["item_id"]) == ["a", "b", "c"]
    got = np.stack(out["embedding"].to_list())
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.stack(df["embedding"].to_list()))
    assert set(out["model_version"]) == {"m1"}
    assert str(out["event_timestamp"].dt.tz) == "UTC"
    assert out["created"].notna().all()


def test_append_adds_a_file_and_leaves_existing_parts_untouched(log: ParquetOfflineLog) -> None:
    log.append("item_content_embedding", batch(["a", "b"]))
    first = {p: p.stat().st_mtime_ns for p in log.parts("item_content_embedding")}
    log.append("item_content_embedding", batch(["c", "d"], start=10))
    after = {p: p.stat().st_mtime_ns for p in log.parts("item_content_embedding")}
    assert len(after) == len(first) + 1
    assert all(after[p] == m for p, m in first.items())


def test_exact_replay_is_a_no_op(log: ParquetOfflineLog) -> None:
    df = batch(["a", "b"])
    assert log.append("item_content_embedding", df) == 2
    n_parts = len(log.parts("item_content_embedding"))
    assert log.append("item_content_embedding", df) == 0
    assert len(log.parts("item_content_embedding")) == n_parts
    assert len(log.read_offline("item_content_embedding")) == 2


def test_replay_with_other_boundaries_reads_back_once_first_write_wins(
    log: ParquetOfflineLog,
) -> None:
    log.append("item_content_embedding", batch(["a", "b"], version="first"))
    # After a crash the consumer re-reads from its last commit with a different batch size:
    # the overlap (b at minute 1) comes again, re-made later with other values.
    replay = batch(["a", "b", "c"], version="second", seed=1)
    replay["created"] = pd.Timestamp(datetime.now(UTC) + timedelta(seconds=5))
    log.append("item_content_embedding", replay)
    out = log.read_offline("item_content_embedding")
    assert list(out["item_id"]) == ["a", "b", "c"]
    assert list(out["model_version"]) == ["first", "first", "second"]


def test_same_entity_at_two_times_is_two_rows(log: ParquetOfflineLog) -> None:
    df = pd.concat([batch(["a"]), batch(["a"], start=5)])
    log.append("item_content_embedding", df)
    assert len(log.read_offline("item_content_embedding")) == 2


def test_time_window_is_half_open(log: ParquetOfflineLog) -> None:
    log.append("item_content_embedding", batch(["a", "b", "c", "d"]))
    out = log.read_offline(
        "item_content_embedding", start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=3)
    )
    assert list(out["item_id"]) == ["b", "c"]


def test_crash_before_rename_leaves_no_visible_rows(log: ParquetOfflineLog) -> None:
    log.append("item_content_embedding", batch(["a"]))
    d = log.path("item_content_embedding")
    # A writer that died mid-write leaves a truncated hidden temp file behind.
    (d / ".tmp-dead.parquet").write_bytes(b"PAR1 truncated")
    out = log.read_offline("item_content_embedding")
    assert list(out["item_id"]) == ["a"]


def test_compact_folds_duplicates_and_keeps_every_key(log: ParquetOfflineLog) -> None:
    log.append("item_content_embedding", batch(["a", "b"]))
    log.append("item_content_embedding", batch(["a", "b", "c"], seed=3))
    before = log.read_offline("item_content_embedding")
    assert log.compact("item_content_embedding") == 3
    parts = [p for p in log.parts("item_content_embedding") if "schema" not in p.name]
    assert len(parts) == 1 and pq.read_metadata(parts[0]).num_rows == 3
    after = log.read_offline("item_content_embedding")
    pd.testing.assert_frame_equal(before, after)


def test_interaction_log_and_user_view_schemas(log: ParquetOfflineLog) -> None:
    events = pd.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "user_id": ["u1", "u1"],
            "item_id": ["i1", "i2"],
            "event_type": ["rating", "click"],
            "value": [4.0, None],
            "event_timestamp": [T0, T0 + timedelta(seconds=1)],
        }
    )
    assert log.append("interaction_log", events) == 2
    assert log.append("interaction_log", events) == 0
    out = log.read_offline("interaction_log")
    assert list(out["event_id"]) == ["e1", "e2"] and np.isnan(out["value"][1])
    users = pd.DataFrame(
        {
            "user_id": ["u1"],
            "embedding": [np.ones(4, np.float32)],
            "model_version": ["t1"],
            "history_len": [7],
            "event_timestamp": [T0],
        }
    )
    log.append("user_tower_embedding", users)
    assert log.read_offline("user_tower_embedding")["history_len"].tolist() == [7]


def test_bad_batches_fail_loudly(log: ParquetOfflineLog) -> None:
    with pytest.raises(ValueError, match="unexpected columns"):
        log.append("item_content_embedding", batch(["a"]).assign(extra=1))
    with pytest.raises(ValueError, match="key column"):
        log.append("item_content_embedding", batch(["a"]).assign(item_id=[None]))
    with pytest.raises(KeyError, match="unknown log"):
        log.append("nope", batch(["a"]))


def test_empty_log_reads_as_empty_frame(log: ParquetOfflineLog) -> None:
    log.ensure("item_tower_embedding")
    assert log.read_offline("item_tower_embedding").empty
    assert log.read_offline("user_tower_embedding").empty


@pytest.mark.parametrize(
    "col",
    [
        pd.Series(pd.to_datetime(np.arange(5) * 10**9, utc=True)),
        pd.Series(pd.to_datetime(np.arange(3), unit="us", utc=True)),
        pd.Series([datetime(2020, 1, 1, tzinfo=UTC)] * 3),
        pd.Series(pd.date_range("2020-03-29", periods=3, freq="h", tz="Europe/Paris")),
        pd.Series(["2020-01-01T00:00:00Z", "2020-01-01T01:00:00+01:00"]),
        pd.Series([datetime(2020, 1, 1), datetime(2021, 1, 1)]),
    ],
    ids=["utc-ns", "utc-us", "datetimes", "paris", "strings", "naive"],
)
def test_utc_times_equals_to_datetime_utc(col: pd.Series) -> None:
    from feature_repo.schema import utc_times

    got, want = utc_times(col), pd.to_datetime(col, utc=True)
    assert got.dtype == want.dtype
    pd.testing.assert_series_equal(got, want)
