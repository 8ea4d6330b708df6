"""A throwaway ``LEARNREC_CACHE_DIR`` that reuses what is costly to rebuild.

Subprocess tests of whole commands (the README block, the demo) get a fresh cache dir,
so their broker, store, registry and job store never touch the user's; the broker jars
(fetched once per machine) and the content-embedding caches (keyed by model and text)
are linked in from the real cache dir.
"""

from __future__ import annotations

from pathlib import Path

from learn_core.settings import cache_dir


def linked_cache_dir(root: Path) -> Path:
    real = cache_dir()
    cache = root / "cache"
    (cache / "kafka").mkdir(parents=True, exist_ok=True)
    for d in (real / "kafka").glob("[0-9]*"):
        (cache / "kafka" / d.name).symlink_to(d)
    for name in ("ceg-cache.sqlite", "content"):
        if (real / name).exists():
            (cache / name).symlink_to(real / name)
    return cache
