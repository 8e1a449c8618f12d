"""Environment variables set for a block of code and put back after it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def scoped_environ(
    values: Mapping[str, str], *, unset: Iterable[str] = (), restore: Iterable[str] = ()
) -> Iterator[None]:
    """``values`` set and ``unset`` removed for the block; on exit (an exception included)
    each of those variables, and each in ``restore`` (ones the block may set), is as before."""
    unset = list(unset)
    saved = {k: os.environ.get(k) for k in [*values, *unset, *restore]}
    os.environ.update(values)
    for k in unset:
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
