"""``learnrec serve`` (the HTTP ranking reader) and ``learnrec rank`` (one request, JSON out)."""

from __future__ import annotations

import argparse
import json
import sys

from ranking.core import SORT_SCORE, SORTS


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the ranking reader over HTTP (FastAPI + uvicorn)")
    p.add_argument("--host", default=None, help="bind address (default LEARNREC_RANKING_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default LEARNREC_RANKING_PORT)")
    p.set_defaults(func=_serve)

    r = sub.add_parser(
        "rank",
        help="rank candidates (or retrieve the top-K) for one user",
        description="Scores each candidate for the user and prints JSON: the candidates by "
        "score (cvr), best first, then those without a score (status unknown or stale) in "
        "the order given; --sort request keeps the order given. With no candidates, the "
        "top-K items by score.",
    )
    r.add_argument("user_id")
    r.add_argument("item_ids", nargs="*", help="candidates; none: retrieve the top-K instead")
    r.add_argument(
        "--sort",
        choices=SORTS,
        default=SORT_SCORE,
        help="order of the candidates: score (best first; default) or request (as given)",
    )
    r.add_argument("-k", type=int, default=10, help="top-K when no candidates are given")
    r.add_argument("--full", action="store_true", help="include the vectors in the output")
    r.set_defaults(func=_rank)


def _serve(args: argparse.Namespace) -> int:
    from learn_core.settings import ConfigError, load
    from ranking.settings import RankingSettings

    flags = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:  # the flags get the same checks as LEARNREC_RANKING_HOST / _PORT
        s = load(RankingSettings, **flags)
    except ConfigError as exc:
        given = " ".join(f"--{k} {v}" for k, v in flags.items())
        raise ConfigError(f"{exc}{f' (from {given})' if given else ''}") from None

    from ranking.reader import open_reader
    from ranking.service import serve

    serve(open_reader(s), s.host, s.port)  # each worker sizes the torch and BLAS pools
    return 0


def _rank(args: argparse.Namespace) -> int:
    from ranking.core import RequestError, UnknownUserError, VersionError
    from ranking.reader import open_reader

    reader = open_reader()
    try:
        if args.item_ids:
            out = reader.rank(args.user_id, args.item_ids).ordered(args.sort).to_dict()
            if not args.full:
                out.pop("user_embedding")
                for it in out["items"]:
                    it.pop("embedding")
                    it.pop("mid_emb")
        else:
            out = reader.retrieve(args.user_id, args.k).to_dict()
    except (RequestError, UnknownUserError, VersionError) as exc:
        # The HTTP service's 400/404/503: a message, not a traceback.
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    finally:
        reader.close()
    print(json.dumps(out, indent=2))
    return 0
