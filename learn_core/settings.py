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


class InputError(ValueError):
    """A user's argument (a path, a data-set name, an id) is wrong; the message says how."""


class ServiceUnavailableError(ConfigError):
    """A service a setting points at does not answer; the message names setting and address."""


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
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if not field:  # a cross-field check: its message names the settings itself
                problems.append(msg)
                continue
            problems.append(f"{env_name(cls, field)}: {msg} (got {err.get('input')!r})")
        raise ConfigError(f"invalid {cls.__name__}: " + "; ".join(problems)) from None


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable behind ``field`` (a field name or, as pydantic reports an
    aliased field, its first alias): the alias that is set, else the prefixed name."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    info = cls.model_fields.get(field)
    if info is None:  # reported by alias
        info = next(
            (
                f
                for f in cls.model_fields.values()
                if field in (getattr(f.validation_alias, "choices", None) or ())
            ),
            None,
        )
    choices = [
        str(c) for c in (getattr(getattr(info, "validation_alias", None), "choices", None) or ())
    ]
    if choices:
        return next((c for c in choices if c in os.environ), choices[0]).upper()
    return f"{prefix}{field}".upper()


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable ``cls`` reads (its prefixed fields and their aliases)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for name, field in cls.model_fields.items():
        names.add(f"{prefix}{name}".upper())
        alias = field.validation_alias
        for choice in getattr(alias, "choices", None) or ([alias] if alias else []):
            names.add(str(choice).upper())
    return names


def check_environment(
    known: set[str],
    *,
    allowed_prefixes: tuple[str, ...] = (),
    environ: dict[str, str] | None = None,
    prefix: str = "LEARNREC_",
) -> None:
    """Refuse ``LEARNREC_*`` variables that no setting reads, naming the closest valid one.

    pydantic-settings ignores unknown variables, so a typo (``LEARNREC_KAFKA_PARTITON``)
    would silently run with the default; this turns it into a start-up error.
    """
    import difflib

    env = os.environ if environ is None else environ
    unknown = sorted(
        k
        for k in env
        if k.upper().startswith(prefix)
        and k.upper() not in known
        and not k.upper().startswith(allowed_prefixes)
    )
    if not unknown:
        return
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "no setting has a similar name"
        problems.append(f"{name}: unknown setting; {hint}")
    raise ConfigError("; ".join(problems) + " (`learnrec settings` lists every variable)")
