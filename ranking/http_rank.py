"""``POST /rank`` as a plain ASGI route, and the error statuses every route shares.

``/rank`` is the hot path of the service, and FastAPI's per-request machinery (routing,
dependency solving, the ``Request`` object, ``json.loads`` then model validation, the
response classes, one middleware layer per concern) cost about 0.5 ms of CPU per
request, as much as the online read and the scoring together (docs/ranking.md, "Over
HTTP"). ``RankRoute`` answers ``POST /rank`` itself with the same checks: the body
size cap (413), pydantic's own validation of the raw JSON (``RankBody``: 400 naming the
field, NaN, unknown fields and malformed JSON included, the input quoted short),
``Accept`` negotiation (JSON or ``ranking.wire``'s compact form, else 406), and the same
error statuses as the FastAPI routes (``error_answer``). Everything else goes to FastAPI.
Candidates come back by score, best first, unless the body's ``sort`` or the query's
(``/rank?sort=request``) asks for the request's order (``RankResult.ordered``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from learn_core.settings import ServiceUnavailableError
from ranking.core import (
    SORT_SCORE,
    SORTS,
    DegradedError,
    RequestError,
    Sort,
    UnknownUserError,
    VersionError,
)
from ranking.wire import JSON_TYPE, MEDIA_TYPE, encode_rank, wants_binary

if TYPE_CHECKING:
    from ranking.reader import RankingReader

log = logging.getLogger(__name__)

#: Threads that run ``/rank``'s blocking read and encoding. A plain executor, not
#: anyio's pool behind ``run_in_threadpool``: its hand-off cost ~0.2 ms of CPU per
#: request (measured). 8: enough to overlap the reads of 8 concurrent connections.
RANK_THREADS = 8
#: Most candidates a request may need from the store and still be answered on the event
#: loop: its read then blocks the loop for ~0.1-0.3 ms, less than a hand-off costs.
INLINE_READS = 32

#: How much of a bad input a 400 quotes back (the rest is elided, never echoed whole).
ECHO_CHARS = 80


class RankBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1)
    item_ids: list[str]
    #: the answer's order: ``score`` (best first; the default) or ``request``; also a query
    #: parameter (``/rank?sort=request``)
    sort: Sort | None = None


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


def error_answer(exc: BaseException) -> tuple[int, dict[str, Any]] | None:
    """(status, JSON body) for an error the reader raises; None: not ours (a 500)."""
    if isinstance(exc, RequestError):
        return 400, {"detail": str(exc)}
    if isinstance(exc, UnknownUserError):
        return 404, {"detail": str(exc.args[0])}
    if isinstance(exc, VersionError):
        return 503, {"detail": str(exc)}
    if isinstance(exc, DegradedError):
        return 503, {"detail": str(exc), "status": "degraded", "degraded": exc.marks}
    if isinstance(exc, ServiceUnavailableError):
        return 503, {"detail": str(exc), "store": "unreachable"}
    if isinstance(exc, store_errors()):
        # A run-time outage: 503 (retry later), not a 500 with a driver traceback.
        log.warning("feature store unreachable: %s: %s", type(exc).__name__, exc)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return 503, {"detail": f"feature store unreachable: {first}", "store": "unreachable"}
    return None


def body_limit_message(max_bytes: int) -> str:
    return f"request body over {max_bytes} bytes (LEARNREC_RANKING_MAX_BODY_BYTES)"


Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class RankRoute:
    """ASGI app that answers ``POST /rank`` and passes every other request (and the
    lifespan) on to ``app``. In front of FastAPI, not inside it: its wrapper (telemetry
    hooks, the error middleware) ran on every request too. An error it does not know
    propagates to the server, which logs it and answers 500."""

    def __init__(self, app: Any, reader: RankingReader, max_bytes: int) -> None:
        self.app, self.reader, self.max_bytes = app, reader, max_bytes
        self._pool = ThreadPoolExecutor(RANK_THREADS, thread_name_prefix="rank")

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/rank":
            await self.app(scope, receive, send)
            return
        answer = await self._answer(scope, receive)
        if answer is None:  # the client went away mid-body
            return
        status, ctype, body = answer
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(len(body)).encode()),
            (b"vary", b"Accept"),
        ]
        if status == 405:
            headers.append((b"allow", b"POST"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(
        self, scope: dict[str, Any], receive: Receive
    ) -> tuple[int, bytes, bytes] | None:
        if scope["method"] != "POST":
            return _error(405, {"detail": "Method Not Allowed"})
        length, accept = None, None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"accept":
                accept = value.decode("latin-1")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return _error(413, {"detail": body_limit_message(self.max_bytes)})
        chunks, seen = [], 0
        while True:  # chunked bodies are counted as they arrive, never read whole
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                return _error(413, {"detail": body_limit_message(self.max_bytes)})
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        binary = wants_binary(accept)
        if binary is None:
            return _error(406, {"detail": f"/rank answers {JSON_TYPE} or {MEDIA_TYPE}"})
        try:
            body = RankBody.model_validate_json(b"".join(chunks))
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            return _error(400, {"detail": validation_detail(errors)})
        sort = _sort(scope.get("query_string", b""), body.sort)
        if isinstance(sort, tuple):
            return sort
        body.sort = sort
        try:
            if self.reader.items.misses_at_most(body.item_ids, INLINE_READS):
                # A short store read (the user's row and a few candidates the near-cache
                # lacks): cheaper here, on the event loop, than the ~0.2 ms of CPU a
                # thread hand-off costs (docs/ranking.md, "Over HTTP").
                return self._rank(body, binary)
            # Many candidates to read: that read blocks for longer, so in the pool.
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._rank, body, binary)
        except Exception as exc:
            known = error_answer(exc)
            if known is None:
                raise
            return _error(*known)

    def _rank(self, body: RankBody, binary: bool) -> tuple[int, bytes, bytes]:
        result = self.reader.rank(body.user_id, body.item_ids).ordered(body.sort or SORT_SCORE)
        if binary:
            return 200, MEDIA_TYPE.encode(), encode_rank(result)
        return 200, JSON_TYPE.encode(), result.to_json()


def _sort(query: bytes, in_body: str | None) -> str | tuple[int, bytes, bytes]:
    """The answer's order from the body's ``sort`` or the query's, else a 400."""
    if not query:
        return in_body or SORT_SCORE
    given = parse_qs(query.decode("latin-1")).get("sort")
    if not given:
        return in_body or SORT_SCORE
    bad = None
    if len(given) > 1 or given[0] not in SORTS:
        bad = f"sort must be one of {', '.join(SORTS)}, once"
    elif in_body is not None and in_body != given[0]:
        bad = f"sort is {in_body!r} in the body and {given[0]!r} in the query"
    if bad is not None:
        detail = [{"loc": "query.sort", "msg": bad, "input": _short(given)}]
        return _error(400, {"detail": detail})
    return given[0]


def _error(status: int, payload: dict[str, Any]) -> tuple[int, bytes, bytes]:
    return status, JSON_TYPE.encode(), orjson.dumps(payload)
