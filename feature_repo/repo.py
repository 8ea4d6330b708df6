"""Module-level Feast objects for the ``feast`` CLI (``feast -c feature_repo -f <yaml> plan``).

The CLI imports every module not in ``.feastignore`` and applies the objects it finds;
this is the only such module. The profile and data dir come from ``LEARNREC_FEAST_*``,
so the CLI applies exactly what ``open_store`` would.
"""

from __future__ import annotations

from feature_repo.definitions import RANKING_SERVICE, build_definitions
from feature_repo.schema import INTERACTION_LOG, ITEM_CONTENT, ITEM_TOWER, USER_TOWER
from feature_repo.settings import FeastSettings
from learn_core.settings import load

_settings = load(FeastSettings)
_defs = build_definitions(_settings.profile, _settings.project, _settings.resolved_data_dir())

user, item = _defs.entities
item_content_embedding = _defs.views[ITEM_CONTENT.name]
item_tower_embedding = _defs.views[ITEM_TOWER.name]
user_tower_embedding = _defs.views[USER_TOWER.name]
interaction_log_source = _defs.sources[f"{INTERACTION_LOG.name}_source"]
ranking = _defs.services[RANKING_SERVICE]
