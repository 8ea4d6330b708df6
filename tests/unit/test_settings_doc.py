"""The README's settings table lists every settings class of the project."""

from __future__ import annotations

import importlib
import pkgutil

from pydantic_settings import BaseSettings

from learnrec.settings_doc import SETTINGS, table

PACKAGES = [
    "learn_core",
    "streaming",
    "feature_repo",
    "trainers",
    "ranking",
    "learnrec",
    "devstack",
]


def _all_settings() -> set[str]:
    found = set()
    for pkg in PACKAGES:
        root = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{pkg}."):
            if info.name.endswith("__main__"):
                continue  # running it would start the CLI
            mod = importlib.import_module(info.name)
            for obj in vars(mod).values():
                if (
                    isinstance(obj, type)
                    and issubclass(obj, BaseSettings)
                    and obj.__module__ == mod.__name__
                ):
                    found.add(f"{obj.__module__}:{obj.__name__}")
    return found


def test_every_settings_class_is_in_the_table() -> None:
    missing = (
        _all_settings()
        - set(SETTINGS)
        - {
            "streaming.consumer:ConsumerSettings",
            "trainers.recipe:RecipeSettings",  # a base class; its fields show in its subclasses
            "trainers.train:ProductRecipeSettings",  # the same, with the named recipe
        }
    )
    assert not missing, f"add to learnrec.settings_doc.SETTINGS: {sorted(missing)}"
    text = table()
    for ref in SETTINGS:
        assert f"**{ref.partition(':')[2]}**" in text
