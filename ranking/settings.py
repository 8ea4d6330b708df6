"""Ranking-reader settings (env prefix ``LEARNREC_RANKING_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RankingSettings(BaseSettings):
    """Caps on requests, the retrieval backend and the HTTP bind address.

    The caps bound the work one request can cause (an online read of ``max_candidates``
    rows and one CVR forward over them); larger requests are refused, not truncated.
    """

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_RANKING_", extra="forbid", allow_inf_nan=False
    )

    max_candidates: int = Field(1000, ge=1, le=100_000, description="items per rank request")
    max_k: int = Field(1000, ge=1, le=100_000, description="largest top-K for retrieval")
    max_id_chars: int = Field(128, ge=1, le=4096, description="longest accepted user/item id")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=1 << 30, description="larger HTTP request bodies get a 413"
    )
    #: ``auto``: pgvector in the production profile when the extension is available,
    #: else the exact in-process index; ``exact``/``pgvector`` force one.
    retrieval: Literal["auto", "exact", "pgvector"] = "auto"
    index_refresh_s: float = Field(
        0.5, ge=0.05, le=3600, description="how often the index picks up new item vectors"
    )
    version_check_s: float = Field(
        0.2, ge=0, le=60, description="how often the registry's current pointer is re-read"
    )
    item_cache_s: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="how long /rank reuses a candidate's vector before reading it again "
        "(0: read every candidate on every request)",
    )
    status_check_s: float = Field(
        0.1,
        ge=0,
        le=60,
        description="how long /rank and /retrieve reuse the store's degraded marks before "
        "reading them again (0: on every request); /healthz reads them every time",
    )
    item_cache_entries: int = Field(
        200_000, ge=1, le=100_000_000, description="item vectors the /rank near-cache holds"
    )
    torch_threads: int = Field(1, ge=1, le=64, description="torch intra-op threads")
    blas_threads: int = Field(
        1, ge=0, le=64, description="numpy's BLAS threads for scoring (0: leave as is)"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: ``learnrec serve`` worker processes; each holds the model and its retrieval index.
    workers: int = Field(1, ge=1, le=64)
