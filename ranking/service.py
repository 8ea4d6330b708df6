"""HTTP service over ``RankingReader`` (FastAPI + uvicorn).

``POST /rank`` {user_id, item_ids, sort?} and ``GET /retrieve?user_id=&k=`` return what
the Python client returns, as JSON, ``/rank``'s candidates by score unless ``sort`` is
``request``; ``/rank`` answers the compact float32 form of
``ranking.wire`` to a client that sends ``Accept: application/x-learnrec-rank``.
Errors map to status codes with the reader's message: 400 bad request (size caps,
malformed ids, malformed or unknown body fields), 404 unknown user, 406 an ``Accept``
that allows neither ``/rank`` encoding, 413 body over ``LEARNREC_RANKING_MAX_BODY_BYTES``,
503 no servable model, store down, or the user's state ``degraded`` (being rebuilt).

The server stack was chosen by measurement (``bench.http_ranking``, docs/ranking.md,
"Over HTTP"): ``/rank`` as a plain ASGI route in front of FastAPI
(``ranking.http_rank``: FastAPI's per-request machinery cost as much CPU as the read),
its work in the thread pool (one request's online read overlaps another's work;
running it on the event loop halved the rate at 8 connections), the body encoded once
from numpy by orjson, or as raw float32 (``ranking.wire``), no access log, httptools +
uvloop when installed, HTTP/1.1 keep-alive, and ``LEARNREC_RANKING_WORKERS`` processes.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from feature_repo.store_status import summary
from learn_core.runtime import limit_threads, settle_heap
from learn_core.settings import ServiceUnavailableError
from ranking.core import DegradedError, RequestError, UnknownUserError, VersionError
from ranking.http_rank import (  # noqa: F401 - RankBody, validation_detail: the service's API
    RankBody,
    RankRoute,
    body_limit_message,
    error_answer,
    store_errors,
    validation_detail,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ranking.reader import RankingReader

log = logging.getLogger(__name__)


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
        return body_limit_message(self.max_bytes)


def create_app(reader: RankingReader, max_body_bytes: int | None = None) -> RankRoute:
    """The service as one ASGI app: ``POST /rank`` answered directly, the rest by FastAPI
    (``.app``), which also runs the lifespan (model poll, index, heap freeze)."""
    import orjson
    from fastapi import FastAPI, HTTPException, Request

    # Small products on the request path: pools that spin on busy cores stall the tail
    # (docs/ranking.md, "Tail latency"). Process-wide, so set by the service, once per
    # worker, from the thread that builds the app: OpenBLAS ignores a limit set from any
    # other thread than the main one (measured), which rules out the lifespan's thread.
    log.info("thread pools: %s", limit_threads(reader.s.blas_threads, reader.s.torch_threads))
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

    async def _reader_error(_: Request, exc: Exception) -> JSONResponse:
        status, payload = error_answer(exc) or (500, {"detail": "internal error"})
        return JSONResponse(payload, status_code=status)

    errors = (RequestError, UnknownUserError, VersionError, ServiceUnavailableError, DegradedError)
    for exc_type in errors:
        app.add_exception_handler(exc_type, _reader_error)
    for exc_type in store_errors():
        app.add_exception_handler(exc_type, _reader_error)

    # Plain ``def`` handlers: FastAPI runs them in its thread pool, so the blocking
    # online read never stalls the event loop.
    @app.get("/retrieve")
    def retrieve(user_id: str, k: int = 10) -> Response:
        return as_json(reader.retrieve(user_id, k).to_dict())

    @app.get("/healthz")
    def healthz() -> Any:
        """200 only when the store answers, holds no state known to be behind the logs
        (``degraded``: a consumer is rebuilding it) and a model serves; the index is built
        here."""
        check = getattr(reader.handle, "check", None)
        if check is not None:
            check()  # ServiceUnavailableError -> 503 naming the setting and address
        marks = reader.status.fresh()
        if marks:
            return JSONResponse(
                {
                    "status": "degraded",
                    "detail": summary(marks),
                    "degraded": [d.to_dict() for d in marks],
                    "store": "ok",
                },
                status_code=503,
            )
        try:
            version: str | None = reader.model().version
            warm_index()
        except VersionError as exc:
            raise HTTPException(503, str(exc)) from exc
        return {
            "status": "ok",
            "model_version": version,
            "store": "ok",
            "retrieval": reader.retrieval.backend,
            "indexed_items": reader.retrieval.size(),
            "item_cache": reader.items.stats(),
        }

    # In front of FastAPI: POST /rank never enters it (ranking.http_rank); the rest does.
    return RankRoute(app, reader, limit)


def app_from_settings() -> RankRoute:
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
    if workers > 1:  # the supervisor stops its workers on SIGTERM and returns
        reader.close()  # each worker opens its own store connections and model cache
        uvicorn.run("ranking.service:app_from_settings", factory=True, workers=workers, **kw)
        return
    server = uvicorn.Server(uvicorn.Config(create_app(reader), **kw))
    with _term_stops(server):
        try:
            server.run()
        except KeyboardInterrupt:  # Ctrl-C, re-raised once the server has shut down
            pass
    if not server.started:  # the port was taken, or the app failed to start: uvicorn said why
        from uvicorn.config import STARTUP_FAILURE

        raise SystemExit(STARTUP_FAILURE)  # as ``uvicorn.run`` exits


@contextlib.contextmanager
def _term_stops(server: Any) -> Iterator[None]:
    """SIGTERM asks ``server`` to stop; after its clean shutdown the command exits 0.

    uvicorn handles SIGTERM itself while it runs, then re-raises it once it has shut down,
    to the handler that was there before it; Python's default handler then killed the
    process (status -15) after a clean stop. Here that handler is one that asks the
    server to stop: a no-op once it has, and a stop before it has started listening.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: object) -> None:
        server.should_exit = True

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
