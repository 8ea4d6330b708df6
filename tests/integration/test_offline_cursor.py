"""The offline log's insertion cursor (``read_new``) and the retrieval index it feeds.

Both backends: the parquet directory and the PostgreSQL table (the logs alone, without a
Feast project: nothing here needs one). What must hold: every stored row is read by
some poll (a row stamped long ago, a transaction that commits after a poll began), an
idle poll reads nothing, and the index keeps each item's newest row however often or
late a row comes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from feature_repo.offline_log import OfflineLog, ParquetOfflineLog
from feature_repo.schema import ITEM_TOWER, LOGS
from ranking.retrieval import ExactRetrieval
from tests.integration.conftest import production_settings

V = "m-cursor"
DIM = 4
NOW = datetime.now(UTC)
NAME = ITEM_TOWER.name


@pytest.fixture(params=["parquet", "postgres"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OfflineLog]:
    if request.param == "parquet":
        yield ParquetOfflineLog(tmp_path / "offline")
        return
    from feature_repo.offline_log.postgres import PostgresOfflineLog
    from feature_repo.store import pg_conninfo

    settings = production_settings(f"t_{uuid.uuid4().hex[:12]}", tmp_path)
    pg = PostgresOfflineLog(pg_conninfo(settings), settings.project)
    pg.conninfo = pg_conninfo(settings)  # for the tests that open a second session
    try:
        yield pg
    finally:
        for name in LOGS:
            pg.drop(name)
        pg.close()


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


def test_each_stored_row_is_read_and_an_idle_poll_reads_nothing(log: OfflineLog) -> None:
    first, cursor = log.read_new(NAME)
    assert first.empty
    log.append(NAME, rows(["a", "b"], NOW, 1.0))
    got, cursor = log.read_new(NAME, cursor)
    assert sorted(got["item_id"]) == ["a", "b"]
    idle, cursor = log.read_new(NAME, cursor)
    assert idle.empty
    # Stamped an hour ago (a writer's clock behind, or a consumer catching up after an
    # outage) but stored now: read by insertion, so not lost to an event-time window.
    log.append(NAME, rows(["c"], NOW - timedelta(hours=1), 2.0))
    got, cursor = log.read_new(NAME, cursor)
    assert list(got["item_id"]) == ["c"]
    np.testing.assert_array_equal(got["embedding"].iloc[0], np.full(DIM, 2.0, np.float32))
    # A replayed batch stores nothing new, so nothing new is read.
    log.append(NAME, rows(["a", "b"], NOW, 1.0))
    again, _ = log.read_new(NAME, cursor)
    assert again.empty


def test_a_transaction_committed_after_a_poll_is_read_by_the_next(log: OfflineLog) -> None:
    if isinstance(log, ParquetOfflineLog):
        pytest.skip("a parquet part appears whole (renamed into place): no late commit")
    import psycopg

    table = log.ensure(NAME)
    _, cursor = log.read_new(NAME)
    with psycopg.connect(log.conninfo) as late:
        late.execute(  # begins a transaction that stays open across the polls below
            f'INSERT INTO "{table}" (item_id, embedding, model_version, event_timestamp, '
            "created) VALUES ('late', %s, %s, %s, %s)",
            ([3.0] * DIM, V, NOW, NOW),
        )
        log.append(NAME, rows(["early"], NOW, 1.0))
        got, cursor = log.read_new(NAME, cursor)
        assert list(got["item_id"]) == ["early"]  # the open transaction is not visible
        late.commit()
    got, cursor = log.read_new(NAME, cursor)
    assert "late" in set(got["item_id"])
    idle, _ = log.read_new(NAME, cursor)
    assert "late" not in set(idle["item_id"])


def test_a_parquet_compaction_reads_its_rows_again_once(tmp_path: Path) -> None:
    log = ParquetOfflineLog(tmp_path)
    log.append(NAME, rows(["a"], NOW, 1.0))
    log.append(NAME, rows(["b"], NOW, 1.0))
    got, cursor = log.read_new(NAME)
    assert sorted(got["item_id"]) == ["a", "b"]
    log.compact(NAME)
    got, cursor = log.read_new(NAME, cursor)
    assert sorted(got["item_id"]) == ["a", "b"]  # the compacted part is new: at least once
    idle, _ = log.read_new(NAME, cursor)
    assert idle.empty
    with pytest.raises(TypeError, match="parquet"):
        log.read_new(NAME, 7)


def test_the_index_keeps_each_items_newest_row(log: OfflineLog) -> None:
    log.append(NAME, rows(["x", "y"], NOW, 1.0))
    log.append(NAME, rows(["z"], NOW, 1.0, version="m-other"))
    # The index reads through the store handle's ``read_new``, which is the log's.
    retrieval = ExactRetrieval(SimpleNamespace(read_new=log.read_new), refresh_s=3600)
    ids, _ = retrieval.search(V, DIM, np.ones(DIM, np.float32), 10, set())
    assert sorted(ids) == ["x", "y"]  # another version's rows are not indexed

    def score(item: str) -> float:
        got, scores = retrieval.search(V, DIM, np.ones(DIM, np.float32), 10, set())
        return float(scores[got.index(item)])

    # Older than the row held (late, or read again): the held vector stays.
    log.append(NAME, rows(["x"], NOW - timedelta(minutes=5), 9.0))
    assert retrieval.refresh() == 1
    assert score("x") == pytest.approx(4.0)
    # Newer: replaces it. A new item joins.
    log.append(NAME, rows(["x", "w"], NOW + timedelta(seconds=1), 2.0))
    assert retrieval.refresh() == 2
    assert score("x") == pytest.approx(8.0)
    assert score("w") == pytest.approx(8.0)
    assert retrieval.refresh() == 0  # idle
    assert retrieval.size() == 3


@pytest.mark.parametrize("bare_column", [False, True])
def test_a_table_of_an_earlier_release_gets_the_cursor_column(
    log: OfflineLog, bare_column: bool
) -> None:
    if isinstance(log, ParquetOfflineLog):
        pytest.skip("PostgreSQL tables only")
    import psycopg

    from feature_repo.offline_log.postgres import INGEST_XID, ddl
    from feature_repo.schema import spec

    table = log.table_name(NAME)
    with psycopg.connect(log.conninfo) as conn:  # as an earlier release left it
        conn.execute(ddl(spec(NAME), table))
        conn.execute(
            f'INSERT INTO "{table}" (item_id, embedding, model_version, event_timestamp, '
            "created) VALUES ('old', %s, %s, %s, %s)",
            ([1.0] * DIM, V, NOW, NOW),
        )
        if bare_column:  # an operator added the column ahead of the upgrade
            conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{INGEST_XID}" xid8')
    got, cursor = log.read_new(NAME)
    assert list(got["item_id"]) == ["old"]
    log.append(NAME, rows(["new"], NOW, 2.0))
    got, cursor = log.read_new(NAME, cursor)
    assert list(got["item_id"]) == ["new"]
    assert INGEST_XID not in log.read_offline(NAME).columns
