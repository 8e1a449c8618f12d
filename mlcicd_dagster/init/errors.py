"""The one error ``mlcicd init`` raises: a problem with its input, named in the message."""

from __future__ import annotations

from mlcicd_dagster.errors import MlcicdError


class InitError(MlcicdError, ValueError):
    """The data or the arguments cannot make a pipeline; the message says why and what to do."""
