"""A module imported on first use, so that loading the code location stays light.

Every Dagster step process and CLI call imports the code location; modules whose
functions need numpy or pandas (but whose registration, descriptions and design
arithmetic do not) name them with ``lazy("numpy")`` and pay the import only when a
function actually runs.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class _LazyModule(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


def lazy(name: str) -> Any:
    """A stand-in for ``import name`` that imports on first attribute access."""
    return _LazyModule(name)
