"""The offline log's insertion cursor (``read_new``) and the retrieval index it feeds.

Both profiles: the parquet directory and the PostgreSQL table. What must hold: every
stored row is read by some poll (a row stamped long ago, a transaction that commits
after a poll began), an idle poll reads nothing, and the index keeps each item's newest
row however often or late a row comes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from feature_repo.schema import ITEM_TOWER
from feature_repo.store import FeatureStoreHandle
from ranking.retrieval import ExactRetrieval

V = "m-cursor"
DIM = 4
NOW = datetime.now(UTC)


def rows(ids: list[str], when: datetime, fill: float, version: str = V) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ids,
            "embedding": [np.full(DIM, fill, np.float32) for _ in ids],
            "model_version": version,
            "event_timestamp": pd.Timestamp(when),
            "created": pd.Timestamp(datetime.now(UTC)),
        }
    )


def test_each_stored_row_is_read_and_an_idle_poll_reads_nothing(
    feast_handle: FeatureStoreHandle,
) -> None:
    name = ITEM_TOWER.name
    first, cursor = feast_handle.read_new(name)
    assert first.empty
    feast_handle.append_offline(name, rows(["a", "b"], NOW, 1.0))
    got, cursor = feast_handle.read_new(name, cursor)
    assert sorted(got["item_id"]) == ["a", "b"]
    idle, cursor = feast_handle.read_new(name, cursor)
    assert idle.empty
    # Stamped an hour ago (a writer's clock behind, or a consumer catching up after an
    # outage) but stored now: read by insertion, so not lost to an event-time window.
    feast_handle.append_offline(name, rows(["c"], NOW - timedelta(hours=1), 2.0))
    got, cursor = feast_handle.read_new(name, cursor)
    assert list(got["item_id"]) == ["c"]
    np.testing.assert_array_equal(got["embedding"].iloc[0], np.full(DIM, 2.0, np.float32))
    # A replayed batch stores nothing new, so nothing new is read.
    feast_handle.append_offline(name, rows(["a", "b"], NOW, 1.0))
    again, _ = feast_handle.read_new(name, cursor)
    assert again.empty


def test_a_transaction_committed_after_a_poll_is_read_by_the_next(
    feast_handle: FeatureStoreHandle,
) -> None:
    if feast_handle.settings.profile != "production":
        pytest.skip("a parquet part appears whole (renamed into place): no late commit")
    import psycopg

    from feature_repo.offline_log.postgres import PostgresOfflineLog
    from feature_repo.store import pg_conninfo

    log = feast_handle.offline
    assert isinstance(log, PostgresOfflineLog)
    name = ITEM_TOWER.name
    table = log.ensure(name)
    _, cursor = feast_handle.read_new(name)
    with psycopg.connect(pg_conninfo(feast_handle.settings)) as late:
        late.execute(  # begins a transaction that stays open across the polls below
            f'INSERT INTO "{table}" (item_id, embedding, model_version, event_timestamp, '
            "created) VALUES ('late', %s, %s, %s, %s)",
            ([3.0] * DIM, V, NOW, NOW),
        )
        feast_handle.append_offline(name, rows(["early"], NOW, 1.0))
        got, cursor = feast_handle.read_new(name, cursor)
        assert list(got["item_id"]) == ["early"]  # the open transaction is not visible
        late.commit()
    got, cursor = feast_handle.read_new(name, cursor)
    assert "late" in set(got["item_id"])
    idle, _ = feast_handle.read_new(name, cursor)
    assert "late" not in set(idle["item_id"])


def test_a_parquet_compaction_reads_its_rows_again_once(tmp_path) -> None:
    from feature_repo.offline_log.parquet import ParquetOfflineLog

    log = ParquetOfflineLog(tmp_path)
    name = ITEM_TOWER.name
    log.append(name, rows(["a"], NOW, 1.0))
    log.append(name, rows(["b"], NOW, 1.0))
    got, cursor = log.read_new(name)
    assert sorted(got["item_id"]) == ["a", "b"]
    log.compact(name)
    got, cursor = log.read_new(name, cursor)
    assert sorted(got["item_id"]) == ["a", "b"]  # the compacted part is new: at least once
    idle, _ = log.read_new(name, cursor)
    assert idle.empty
    with pytest.raises(TypeError, match="parquet"):
        log.read_new(name, 7)


def test_the_index_keeps_each_items_newest_row(feast_handle: FeatureStoreHandle) -> None:
    name = ITEM_TOWER.name
    feast_handle.append_offline(name, rows(["x", "y"], NOW, 1.0))
    feast_handle.append_offline(name, rows(["z"], NOW, 1.0, version="m-other"))
    retrieval = ExactRetrieval(feast_handle, refresh_s=3600)  # polled by hand below
    ids, _ = retrieval.search(V, DIM, np.ones(DIM, np.float32), 10, set())
    assert sorted(ids) == ["x", "y"]  # another version's rows are not indexed

    def score(item: str) -> float:
        got, scores = retrieval.search(V, DIM, np.ones(DIM, np.float32), 10, set())
        return float(scores[got.index(item)])

    # Older than the row held (late, or read again): the held vector stays.
    feast_handle.append_offline(name, rows(["x"], NOW - timedelta(minutes=5), 9.0))
    assert retrieval.refresh() == 1
    assert score("x") == pytest.approx(4.0)
    # Newer: replaces it. A new item joins.
    feast_handle.append_offline(name, rows(["x", "w"], NOW + timedelta(seconds=1), 2.0))
    assert retrieval.refresh() == 2
    assert score("x") == pytest.approx(8.0)
    assert score("w") == pytest.approx(8.0)
    assert retrieval.refresh() == 0  # idle
    assert retrieval.size() == 3


@pytest.mark.parametrize("bare_column", [False, True])
def test_a_table_of_an_earlier_release_gets_the_cursor_column(
    feast_handle: FeatureStoreHandle, bare_column: bool
) -> None:
    if feast_handle.settings.profile != "production":
        pytest.skip("PostgreSQL tables only")
    import uuid

    import psycopg

    from feature_repo.offline_log.postgres import INGEST_XID, PostgresOfflineLog, ddl
    from feature_repo.schema import spec
    from feature_repo.store import pg_conninfo

    conninfo = pg_conninfo(feast_handle.settings)
    log = PostgresOfflineLog(conninfo, f"t_old_{uuid.uuid4().hex[:10]}")
    name = ITEM_TOWER.name
    table = log.table_name(name)
    try:
        with psycopg.connect(conninfo) as conn:  # as an earlier release left it
            conn.execute(ddl(spec(name), table))
            conn.execute(
                f'INSERT INTO "{table}" (item_id, embedding, model_version, event_timestamp, '
                "created) VALUES ('old', %s, %s, %s, %s)",
                ([1.0] * DIM, V, NOW, NOW),
            )
            if bare_column:  # an operator added the column ahead of the upgrade
                conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{INGEST_XID}" xid8')
        got, cursor = log.read_new(name)
        assert list(got["item_id"]) == ["old"]
        log.append(name, rows(["new"], NOW, 2.0))
        got, cursor = log.read_new(name, cursor)
        assert list(got["item_id"]) == ["new"]
        assert "_ingest_xid" not in log.read_offline(name).columns
    finally:
        log.drop(name)
        log.close()
