"""Feature-store settings: which profile, where its data lives, how to reach its services.

Two profiles share one set of definitions:

* ``embedded`` (default): SQLite online store, a parquet directory per view as the
  offline store and Feast's SQL registry on SQLite, all under ``data_dir``. Runs on a
  laptop with no services.
* ``production``: Redis online store, PostgreSQL offline store and SQL registry on
  PostgreSQL. Connection settings come from ``LEARNREC_FEAST_*`` variables; the
  password is never written to disk (the rendered yaml refers to ``${...}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from learn_core.settings import cache_dir

Profile = Literal["embedded", "production"]


class FeastSettings(BaseSettings):
    """Environment: ``LEARNREC_FEAST_<FIELD>`` (e.g. ``LEARNREC_FEAST_PROFILE=production``)."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_FEAST_", extra="forbid", allow_inf_nan=False
    )

    profile: Profile = "embedded"
    #: Feast project name; also names the default data dir and the Postgres table prefix.
    project: str = Field(default="learnrec", pattern=r"^[a-z][a-z0-9_]{0,40}$")
    #: Where the rendered feature_store.yaml, the SQLite files and the parquet logs live.
    #: Default: ``cache_dir()/feast/<project>``.
    data_dir: Path | None = None

    redis_url: str = "redis://127.0.0.1:6379/0"
    pg_host: str = "127.0.0.1"
    pg_port: int = Field(default=5432, ge=1, le=65535)
    pg_db: str = "learnrec"
    pg_user: str = "learnrec"
    pg_password: SecretStr = SecretStr("")
    pg_sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = (
        "prefer"
    )
    historical_chunk_rows: int = Field(
        20_000, ge=100, le=10_000_000,
        description="entity rows per point-in-time query (the dask store holds rows x key history)",
    )  # fmt: skip

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("expected redis://[:password@]host:port[/db]")
        return v

    def resolved_data_dir(self) -> Path:
        d = self.data_dir if self.data_dir is not None else cache_dir() / "feast" / self.project
        return d.expanduser().resolve()


def redis_connection_string(url: str) -> str:
    """Turn ``redis://[:pw@]host:port/db`` into Feast's ``host:port,db=N[,password=..]`` form."""
    parts = urlsplit(url)
    out = f"{parts.hostname}:{parts.port or 6379}"
    db = parts.path.strip("/")
    if db:
        out += f",db={int(db)}"
    if parts.password:
        out += f",password={parts.password}"
    if parts.scheme == "rediss":
        out += ",ssl=true"
    return out
