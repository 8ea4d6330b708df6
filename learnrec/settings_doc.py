"""``learnrec settings``: the table of every environment variable, generated from the code."""

from __future__ import annotations

import argparse
import importlib
import types
import typing
from pathlib import Path

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

#: "module:Class" of every component's settings, in data-flow order.
SETTINGS = [
    "streaming.settings:KafkaSettings",
    "devstack.kafka.config:BrokerSettings",
    "streaming.settings:LimitsSettings",
    "learn_core.embedding.hf:EmbedderSettings",
    "streaming.item_consumer:ItemConsumerSettings",
    "streaming.interaction_settings:InteractionConsumerSettings",
    "streaming.metrics:MetricsSettings",
    "feature_repo.settings:FeastSettings",
    "learn_core.registry:RegistrySettings",
    "trainers.cli:TrainSettings",
    "trainers.jobs.retrain:RetrainSettings",
    "trainers.jobs.scheduler:SchedulerSettings",
    "trainers.jobs.ray_backfill:BackfillEngineSettings",
    "ranking.settings:RankingSettings",
]

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def _classes() -> list[type[BaseSettings]]:
    out = []
    for ref in SETTINGS:
        mod, _, name = ref.partition(":")
        out.append(getattr(importlib.import_module(mod), name))
    return out


def _default(field) -> str:  # noqa: ANN001 - pydantic FieldInfo
    if field.is_required():
        return "(required)"
    d = field.get_default(call_default_factory=True)
    if d is None:
        return "unset"
    if hasattr(d, "get_secret_value"):
        return "(secret)"
    return f"`{d}`"


def is_numeric(field: FieldInfo) -> bool:
    """Whether a field holds a number (``int``/``float``, optional or not; ``bool`` is not)."""
    ann = field.annotation
    args = (
        typing.get_args(ann)
        if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union
        else (ann,)
    )
    return any(a in (int, float) for a in args)


def _num(x: float) -> str:
    if isinstance(x, float) and not x.is_integer():
        return f"{x:g}"
    return f"{int(x):,}".replace(",", "_")


def value_range(field: FieldInfo) -> str:
    """A numeric field's bounds as text (``0 < v ≤ 3_600``); "" for other fields."""
    if not is_numeric(field):
        return ""
    lo = hi = ""
    for m in field.metadata:
        if isinstance(m, Ge):
            lo = f"{_num(m.ge)} ≤ "
        elif isinstance(m, Gt):
            lo = f"{_num(m.gt)} < "
        elif isinstance(m, Le):
            hi = f" ≤ {_num(m.le)}"
        elif isinstance(m, Lt):
            hi = f" < {_num(m.lt)}"
    return f"{lo}v{hi}" if lo or hi else "any"


def _comments(cls: type) -> dict[str, str]:
    """Field descriptions written as ``#:`` comments above the field (Sphinx style)."""
    import inspect
    import re

    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = re.match(r"^([a-z_][a-z0-9_]*)\s*:", stripped)
        if m and pending:
            out[m.group(1)] = " ".join(pending)
        pending = []
    return out


def table() -> str:
    rows = ["| variable | default | range | meaning |", "|---|---|---|---|"]
    for cls in _classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else cls.__name__
        rows.append(f"| **{cls.__name__}** | | | {doc} |")
        notes = _comments(cls)
        for name, field in cls.model_fields.items():
            env = f"{prefix}{name}".upper()
            alias = field.validation_alias
            if alias is not None and hasattr(alias, "choices"):
                env = " / ".join(str(c) for c in alias.choices)
            desc = (field.description or notes.get(name, "")).replace("|", "\\|")
            rows.append(f"| `{env}` | {_default(field)} | {value_range(field)} | {desc} |")
    return "\n".join(rows)


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("settings", help="print the table of settings (environment variables)")
    p.add_argument(
        "--write-readme",
        type=Path,
        default=None,
        metavar="README",
        help="replace the table between the settings-table markers in README",
    )
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    t = table()
    if args.write_readme is None:
        print(t)
        return 0
    text = args.write_readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{args.write_readme}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    args.write_readme.write_text(f"{head}{START}\n{t}\n{END}{tail}")
    return 0
