"""``learnrec feast ...``: initialise and inspect the feature store of the configured profile."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``learnrec feast {apply,show,compact}``."""
    p = subparsers.add_parser(
        "feast",
        help="feature store: apply definitions, show state, compact parquet logs",
        description="Profile and connections come from LEARNREC_FEAST_* (see feature_repo/settings.py).",
    )
    sub = p.add_subparsers(dest="feast_command", required=True)
    sub.add_parser(
        "apply", help="render feature_store.yaml and apply the definitions"
    ).set_defaults(func=_apply)
    sub.add_parser("show", help="profile, paths, views and offline row counts").set_defaults(
        func=_show
    )
    c = sub.add_parser("compact", help="fold a parquet log's part files into one (embedded)")
    c.add_argument("name", help="log name, e.g. item_content_embedding")
    c.set_defaults(func=_compact)


def _apply(args: argparse.Namespace) -> int:
    from feature_repo.store import open_store

    handle = open_store()
    views = sorted(v.name for v in handle.store.list_feature_views())
    print(f"profile={handle.settings.profile} yaml={handle.yaml_path}")
    print("feature views: " + ", ".join(views))
    handle.close()
    return 0


def _show(args: argparse.Namespace) -> int:
    from feature_repo.schema import LOGS
    from feature_repo.store import open_store

    handle = open_store(apply=False)
    print(f"profile:  {handle.settings.profile}")
    print(f"project:  {handle.settings.project}")
    print(f"yaml:     {handle.yaml_path}")
    print(f"data dir: {handle.yaml_path.parent}  (Feast's CLI: feast -c <data dir> ui)")
    print("views:    " + ", ".join(sorted(v.name for v in handle.store.list_feature_views())))
    for name in LOGS:
        print(f"offline:  {name}: {len(handle.read_offline(name)):,} rows")
    handle.close()
    return 0


def _compact(args: argparse.Namespace) -> int:
    from feature_repo.offline_log.parquet import ParquetOfflineLog
    from feature_repo.settings import FeastSettings
    from feature_repo.store import open_offline_log
    from learn_core.settings import load

    log = open_offline_log(load(FeastSettings))
    if not isinstance(log, ParquetOfflineLog):
        print("compact applies to the embedded (parquet) profile only")
        return 2
    print(f"{args.name}: {log.compact(args.name):,} rows in one part")
    return 0
