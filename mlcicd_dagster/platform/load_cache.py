"""Load-time checks remembered by the bytes they read, so each process does not redo them.

The code location checks each pipeline's files when it loads (a bad drift rule, a gates
design that would reject equal models too often): in every Dagster step process and CLI
call. Their results depend only on those files and on this library's code, so they are
kept under ``$MLCICD_CACHE_DIR/location/`` (default ``~/.cache/mlcicd``; never in a
home, which holds state only), keyed by a SHA-256 of the files' bytes,
the check's arguments and a fingerprint of the library's source files (path, size,
mtime). A changed file, argument or library version is a different key: the check runs
again. Anything wrong with the cache (unreadable, unwritable) just runs the check.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_LIB = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """Path, size and mtime of every ``.py`` file of the library. os.walk on strings, not
    Path.rglob (which also lists each ``__pycache__``): ~1/3 of the time, in every process
    that loads the code location."""
    entries = []
    for folder, dirs, files in os.walk(_LIB):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(folder, _LIB)
        for name in files:
            if name.endswith(".py"):
                try:
                    st = os.stat(os.path.join(folder, name))
                except OSError:
                    continue
                entries.append(f"{os.path.join(rel, name)}:{st.st_size}:{st.st_mtime_ns};")
    return hashlib.sha256("".join(sorted(entries)).encode()).hexdigest()


def _folder() -> Path | None:
    from mlcicd_dagster import settings

    root = settings.get("MLCICD_CACHE_DIR")
    if not root:
        try:
            root = str(Path.home() / ".cache" / "mlcicd")
        except RuntimeError:  # no home directory for this user
            return None
    return Path(root).expanduser() / "location"


def _key(kind: str, files: Sequence[Path | None], args: Any) -> str:
    h = hashlib.sha256(f"{kind}\0{_code_fingerprint()}\0".encode())
    h.update(json.dumps(args, sort_keys=True, default=str).encode())
    for f in files:
        h.update(b"\0")
        if f is None:
            continue
        h.update(str(f).encode())
        h.update(hashlib.sha256(Path(f).read_bytes()).digest())
    return h.hexdigest()


def remembered(kind: str, files: Sequence[Path | None], args: Any, compute: Callable[[], T]) -> T:
    """``compute()`` (a JSON-able result), or the result it gave before for the same
    ``files`` (their bytes), ``args`` and library code. A check that raises is never
    remembered: it raises again in the next process, with its message."""
    folder = _folder()
    try:
        key = _key(kind, files, args) if folder is not None else None
    except OSError:
        key = None  # a file it would read is missing: the check says so
    if folder is None or key is None:
        return compute()
    path = folder / f"{kind}-{key[:40]}.json"
    try:
        return json.loads(path.read_text())["value"]  # type: ignore[no-any-return]
    except (OSError, ValueError, KeyError):
        pass
    value = compute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"value": value}))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: the next process checks again
    return value
