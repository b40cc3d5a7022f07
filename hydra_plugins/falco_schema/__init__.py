"""Registers falco's config schemas (falco/schema.py) before every composition Hydra makes here.

Hydra calls each search-path plugin when it sets up a config loader (`@hydra.main`, `initialize*`),
before any config is read; so evaluate.py, train_classifier and in-process composes find the
schemas their defaults lists name without registering them themselves.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class FalcoSchemas(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from falco.schema import register  # here, not at import: plugin discovery stays cheap

        register()
