"""``@presigned``: a step function's signature, worked out once instead of ~15 times.

Dagster's decorators (``@dg.asset``, ``@dg.op``, the checks, sensors and jobs) ask for the
decorated function's ``inspect.signature`` over and over (inputs, context, config,
resources, type hints), and ``inspect`` rebuilds it on every call. A function that
carries its signature (``__signature__``, which ``inspect`` and Dagster honour) is read
once: ~900 signature builds fewer for three pipelines, in every process that loads the
code location. Put it right under the Dagster decorator::

    @dg.asset(key=...)
    @presigned
    def raw_batch(context: dg.AssetExecutionContext, mlcicd: MlcicdResource): ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def presigned(fn: F) -> F:
    """``fn`` with its signature computed now and kept (the same one ``inspect`` gives)."""
    fn.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    return fn
