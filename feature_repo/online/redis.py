"""Fast raw reads from Feast's Redis online store (the production profile)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from feature_repo.online.base import RawPair, Request

logger = logging.getLogger(__name__)


#: All of a request's ``HMGET``s in one server-side call. ``ARGV`` holds, per view, the
#: number of keys and the two hash fields; the reply is flat, two values per key
#: (Lua ``false`` comes back as nil for a missing field).
_HMGET_ALL = """
local out, k, a = {}, 1, 1
while a <= #ARGV do
  local n, fa, fb = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  for _ = 1, n do
    local v = redis.call('HMGET', KEYS[k], fa, fb)
    out[2 * k - 1] = v[1]
    out[2 * k] = v[2]
    k = k + 1
  end
  a = a + 3
end
return out
"""


class RedisRawSource:
    """``HMGET key <embedding field> <model_version field>`` for every id of every view.

    Keys and hash fields as Feast's ``RedisOnlineStore`` writes them: the serialised
    entity key + project, and ``mmh3("<view>:<feature>")``. On a single Redis the
    ``HMGET``s run in one Lua script (one command to pack and one reply to parse instead
    of one per id, which halves the client-side time); on a cluster, whose keys span
    slots, or where scripts are refused, they go as one pipeline.
    """

    def __init__(
        self,
        client: Any,
        project: str,
        fields: dict[str, list[bytes]],
        keys: dict[str, Callable],
        *,
        use_script: bool = True,
    ) -> None:
        self.client = client
        self.project = project.encode("utf8")
        self.fields = fields
        self.keys = keys
        self._script = client.register_script(_HMGET_ALL) if use_script else None

    def _keys(self, view: str, ids: Sequence[str]) -> list[bytes]:
        enc, project = self.keys[view], self.project
        return [enc(i) + project for i in ids]

    def fetch(self, requests: Sequence[Request]) -> list[list[RawPair]]:
        if self._script is not None:
            from redis.exceptions import NoPermissionError, ResponseError

            try:
                flat = self._fetch_script(requests)
            except ResponseError as exc:
                # A server that forbids scripts (ACL, disabled EVAL) still serves HMGET.
                if not isinstance(exc, NoPermissionError) and "unknown command" not in str(exc):
                    raise
                logger.warning("Redis refused the read script (%s); using a pipeline", exc)
                self._script = None
            else:
                return _split(requests, list(zip(flat[::2], flat[1::2], strict=True)))
        return _split(requests, self._fetch_pipeline(requests))

    def _fetch_script(self, requests: Sequence[Request]) -> list[Any]:
        assert self._script is not None
        keys: list[bytes] = []
        args: list[Any] = []
        for view, ids in requests:
            keys += self._keys(view, ids)
            args += [len(ids), *self.fields[view]]
        return self._script(keys=keys, args=args)

    def _fetch_pipeline(self, requests: Sequence[Request]) -> list[RawPair]:
        with self.client.pipeline(transaction=False) as pipe:
            for view, ids in requests:
                fields = self.fields[view]
                for key in self._keys(view, ids):
                    pipe.execute_command("HMGET", key, *fields)
            return [(r[0], r[1]) for r in pipe.execute()]


def _split(requests: Sequence[Request], pairs: list[RawPair]) -> list[list[RawPair]]:
    out: list[list[RawPair]] = []
    start = 0
    for _, ids in requests:
        out.append(pairs[start : start + len(ids)])
        start += len(ids)
    return out
