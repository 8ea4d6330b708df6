"""HTTP service over ``RankingReader`` (FastAPI + uvicorn).

``POST /rank`` {user_id, item_ids} and ``GET /retrieve?user_id=&k=`` return what the
Python client returns, as JSON. Errors map to status codes with the reader's message:
400 bad request (size caps, malformed ids, malformed or unknown body fields), 404 unknown
user, 413 body over ``LEARNREC_RANKING_MAX_BODY_BYTES``, 503 no servable model or store down.

The server stack was chosen by measurement (``bench.http_ranking``, docs/BENCHMARKS.md):
plain ``def`` handlers (the thread pool overlaps one request's online read with
another's work; ``async def`` halved the rate at 8 connections), the body encoded once
by orjson into a plain ``Response`` (FastAPI's response-model path validates and
encodes 100 x 128 floats itself), no access log, httptools + uvloop when installed,
HTTP/1.1 keep-alive, and ``LEARNREC_RANKING_WORKERS`` processes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from learn_core.runtime import settle_heap
from learn_core.settings import ServiceUnavailableError
from ranking.core import RequestError, UnknownUserError, VersionError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ranking.reader import RankingReader

log = logging.getLogger(__name__)

#: How much of a bad input a 400 quotes back (the rest is elided, never echoed whole).
ECHO_CHARS = 80


class RankBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1)
    item_ids: list[str]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}… ({len(text)} chars)"


def validation_detail(errors: Any) -> list[dict[str, str]]:
    """Pydantic's errors made JSON-safe (NaN inputs) and short (inputs truncated)."""
    out = []
    for err in list(errors)[:10]:
        item = {
            "loc": ".".join(str(p) for p in err.get("loc", ())),
            "msg": str(err.get("msg", "")),
        }
        if "input" in err:
            item["input"] = _short(err["input"])
        out.append(item)
    return out


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413 before parsing them.

    Checks ``Content-Length`` up front and counts the bytes of chunked bodies as they
    arrive, so a 50 MB body is never read into memory.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(
        self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from fastapi import HTTPException
        from fastapi.responses import JSONResponse

        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            response = JSONResponse({"detail": self._message()}, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI re-raises an HTTPException from the body read
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"request body over {self.max_bytes} bytes (LEARNREC_RANKING_MAX_BODY_BYTES)"


def store_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the store's service is down", from the clients installed."""
    out: list[type[BaseException]] = []
    try:
        import redis

        out += [redis.ConnectionError, redis.TimeoutError]
    except ImportError:
        pass
    try:
        import psycopg

        out.append(psycopg.OperationalError)
    except ImportError:
        pass
    return tuple(out)


def create_app(reader: RankingReader, max_body_bytes: int | None = None) -> FastAPI:
    import orjson
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    def as_json(payload: dict[str, Any]) -> Response:
        return Response(orjson.dumps(payload), media_type="application/json")

    warmed: dict[str, str | None] = {"version": None}

    def warm_index() -> None:
        """Build the retrieval index of the serving version now, not at the first /retrieve."""
        model = reader.model()
        if warmed["version"] != model.version:
            search = getattr(reader.retrieval, "search", None)
            if search is not None:
                search(model.version, model.dim, np.zeros(model.dim, np.float32), 1, set())
            warmed["version"] = model.version

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reader.start()  # model pointer poll and the retrieval index's refresh
        try:
            warm_index()
        except VersionError as exc:  # no model yet: /healthz says so, the index waits
            log.warning("retrieval index not built at start-up: %s", exc)
        # Warm: what is alive now lives as long as the process; no collection walks it.
        log.info("start-up heap frozen: %d objects", settle_heap())
        try:
            yield
        finally:
            reader.close()

    app = FastAPI(title="learnrec ranking reader", lifespan=lifespan)
    limit = max_body_bytes if max_body_bytes is not None else reader.s.max_body_bytes
    app.add_middleware(BodyLimit, max_bytes=limit)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=400)

    @app.exception_handler(RequestError)
    async def _bad(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(UnknownUserError)
    async def _unknown(_: Request, exc: UnknownUserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0])}, status_code=404)

    @app.exception_handler(VersionError)
    async def _version(_: Request, exc: VersionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(ServiceUnavailableError)
    async def _store_down(_: Request, exc: ServiceUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "store": "unreachable"}, status_code=503)

    async def _store_error(_: Request, exc: Exception) -> JSONResponse:
        # A run-time outage: 503 (retry later), not a 500 with a driver traceback.
        log.warning("feature store unreachable: %s: %s", type(exc).__name__, exc)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return JSONResponse(
            {"detail": f"feature store unreachable: {first}", "store": "unreachable"},
            status_code=503,
        )

    for exc_type in store_errors():
        app.add_exception_handler(exc_type, _store_error)

    # Plain ``def`` handlers: FastAPI runs them in its thread pool, so the blocking
    # online read and the torch forward never stall the event loop.
    @app.post("/rank")
    def rank(body: RankBody) -> Response:
        body_bytes = reader.rank(body.user_id, body.item_ids).to_json()
        return Response(body_bytes, media_type="application/json")

    @app.get("/retrieve")
    def retrieve(user_id: str, k: int = 10) -> Response:
        return as_json(reader.retrieve(user_id, k).to_dict())

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """200 only when the store answers and a model serves; the index is built here."""
        check = getattr(reader.handle, "check", None)
        if check is not None:
            check()  # ServiceUnavailableError -> 503 naming the setting and address
        try:
            version: str | None = reader.model().version
            warm_index()
        except VersionError as exc:
            raise HTTPException(503, str(exc)) from exc
        return {
            "model_version": version,
            "store": "ok",
            "retrieval": reader.retrieval.backend,
            "indexed_items": reader.retrieval.size(),
        }

    return app


def app_from_settings() -> FastAPI:
    """The app over ``open_reader()``: what each worker process builds when there are several."""
    from learn_core.settings import load
    from ranking.reader import open_reader
    from ranking.settings import RankingSettings

    return create_app(open_reader(load(RankingSettings)))


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
