"""HTTP service over ``RankingReader`` (FastAPI + uvicorn).

``POST /rank`` {user_id, item_ids} and ``GET /retrieve?user_id=&k=`` return what the
Python client returns, as JSON. Errors map to status codes with the reader's message:
400 bad request (size caps, malformed ids), 404 unknown user, 503 no servable model.
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
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse

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
    def rank(body: RankBody) -> dict[str, Any]:
        return reader.rank(body.user_id, body.item_ids).to_dict()

    @app.get("/retrieve")
    def retrieve(user_id: str, k: int = 10) -> dict[str, Any]:
        return reader.retrieve(user_id, k).to_dict()

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


def serve(reader: RankingReader, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(reader), host=host, port=port, log_level="info")
