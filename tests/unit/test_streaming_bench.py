"""bench.streaming helpers: the cycled freshness stream must never reuse an event id."""

from __future__ import annotations

import pandas as pd

from bench.streaming_procs import fresh_frame


def test_fresh_frame_cycles_the_data_with_unique_ids_per_tag() -> None:
    df = pd.DataFrame({"event_id": ["a", "b", "c"], "user_id": ["u1", "u2", "u1"]})
    one = fresh_frame(df, 7, "t1000")
    assert len(one) == 7
    assert one["event_id"].is_unique
    assert one["user_id"].tolist() == ["u1", "u2", "u1"] * 2 + ["u1"]
    # A second run of the same bench (another rate) must not reuse the first one's ids:
    # a reused id with another timestamp is refused as a conflict and dead-lettered.
    other = fresh_frame(df, 7, "t5000")
    assert set(one["event_id"]).isdisjoint(other["event_id"])
    assert df["event_id"].tolist() == ["a", "b", "c"]  # the data set is not modified
