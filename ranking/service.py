"""HTTP service over ``RankingReader`` (FastAPI + uvicorn).

``POST /rank`` {user_id, item_ids} and ``GET /retrieve?user_id=&k=`` return what the
Python client returns, as JSON. Errors map to status codes with the reader's message:
400 bad request (size caps, malformed ids), 404 unknown user, 503 no servable model.

The server stack was chosen by measurement (``bench.http_ranking``, docs/BENCHMARKS.md):
plain ``def`` handlers (the thread pool overlaps one request's online read with
another's work; ``async def`` halved the rate at 8 connections), the body encoded once
by orjson into a plain ``Response`` (FastAPI's response-model path validates and
encodes 100 x 128 floats itself), no access log, httptools + uvloop when installed,
HTTP/1.1 keep-alive, and ``LEARNREC_RANKING_WORKERS`` processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from ranking.core import RequestError, UnknownUserError, VersionError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ranking.reader import RankingReader


class RankBody(BaseModel):
    user_id: str = Field(min_length=1)
    item_ids: list[str]


def create_app(reader: RankingReader) -> FastAPI:
    import orjson
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, Response

    def as_json(payload: dict[str, Any]) -> Response:
        return Response(orjson.dumps(payload), media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reader.start()  # the retrieval index's background refresh
        try:
            yield
        finally:
            reader.close()

    app = FastAPI(title="learnrec ranking reader", lifespan=lifespan)

    @app.exception_handler(RequestError)
    async def _bad(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(UnknownUserError)
    async def _unknown(_: Request, exc: UnknownUserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0])}, status_code=404)

    @app.exception_handler(VersionError)
    async def _version(_: Request, exc: VersionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    # Plain ``def`` handlers: FastAPI runs them in its thread pool, so the blocking
    # online read and the torch forward never stall the event loop.
    @app.post("/rank")
    def rank(body: RankBody) -> Response:
        return as_json(reader.rank(body.user_id, body.item_ids).to_dict())

    @app.get("/retrieve")
    def retrieve(user_id: str, k: int = 10) -> Response:
        return as_json(reader.retrieve(user_id, k).to_dict())

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        try:
            version: str | None = reader.model().version
        except VersionError as exc:
            raise HTTPException(503, str(exc)) from exc
        return {
            "model_version": version,
            "retrieval": reader.retrieval.backend,
            "indexed_items": reader.retrieval.size(),
        }

    return app


def app_from_settings() -> FastAPI:
    """The app over ``open_reader()``: what each worker process builds when there are several."""
    import torch

    from learn_core.settings import load
    from ranking.reader import open_reader
    from ranking.settings import RankingSettings

    s = load(RankingSettings)
    torch.set_num_threads(s.torch_threads)
    return create_app(open_reader(s))


def serve(reader: RankingReader, host: str, port: int, workers: int | None = None) -> None:
    """Run the service; ``workers`` (default ``LEARNREC_RANKING_WORKERS``) > 1 forks that
    many processes, each with its own reader built from the environment."""
    import uvicorn

    if workers is None:
        workers = reader.s.workers
    kw: dict[str, Any] = dict(host=host, port=port, log_level="info", access_log=False)
    if workers > 1:
        reader.close()  # each worker opens its own store connections and model cache
        uvicorn.run("ranking.service:app_from_settings", factory=True, workers=workers, **kw)
    else:
        uvicorn.run(create_app(reader), **kw)
