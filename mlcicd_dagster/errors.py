"""The library's errors: one base class, so callers can catch everything of ours at once.

Every error the library raises on purpose derives from :class:`MlcicdError`; the
``mlcicd`` command line prints these without a traceback. Subclasses that also derive
from a builtin (``ValueError``, ``RuntimeError``) keep ``except ValueError`` callers
working.
"""

from __future__ import annotations


class MlcicdError(Exception):
    """Base class of every error mlcicd-dagster raises on purpose."""


class ConfigError(MlcicdError, ValueError):
    """A pipeline's configuration is invalid.

    ``field`` is the dotted path of the offending field in the component instance
    (e.g. ``model.factory``), ``source`` the file that declares it.
    """

    def __init__(self, message: str, *, field: str | None = None, source: str | None = None):
        self.field = field
        self.source = source
        where = f"{source}: " if source else ""
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")
