"""Append-only offline logs (parquet directory or PostgreSQL table) behind one port."""

from feature_repo.offline_log.base import OfflineLog, dedup, to_table
from feature_repo.offline_log.parquet import ParquetOfflineLog

__all__ = ["OfflineLog", "ParquetOfflineLog", "dedup", "to_table"]
