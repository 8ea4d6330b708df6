"""Settings shared by several components, read from the environment.

Each component owns one pydantic-settings class (``extra="forbid"``) with defaults
that run on one laptop. A bad value fails at start-up with the variable's name:
``load(Settings)`` turns pydantic's error into a ``ConfigError`` naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

T = TypeVar("T", bound=BaseSettings)


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


def cache_dir() -> Path:
    """Where downloads and caches live: outside the clone, overridable by LEARNREC_CACHE_DIR."""
    base = os.environ.get("LEARNREC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "learnrec"
    )
    return Path(base)


def load(cls: type[T], **overrides: object) -> T:
    """Build a settings object, reporting failures by environment-variable name."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            if not field:  # a cross-field check: its message names the settings itself
                problems.append(err["msg"].removeprefix("Value error, "))
                continue
            problems.append(f"{prefix}{field.upper()}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"invalid {cls.__name__}: " + "; ".join(problems)) from None
