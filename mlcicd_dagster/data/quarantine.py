"""Quarantine: a byte-identical copy of a rejected batch, with a JSON saying why.

Layout: ``<quarantine_dir>/<name>`` and ``<quarantine_dir>/<name>.reason.json``.
The copy is streamed (constant memory), hashed while written, re-read and hashed
again, and only then renamed into place; the reason JSON is written (atomically)
after the copy, so a reason file always has its copy beside it. Quarantining the
same bytes again is a no-op that returns the same path (the reason is refreshed).
Different bytes under a name already in quarantine get ``<stem>~<sha8><suffix>``,
so nothing quarantined is ever overwritten. The source is only read.

An entry that must not be read at all (a symlink out of the landing zone) gets a
reason JSON only: :func:`record_refusal`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mlcicd_dagster.data.fingerprint import file_sha256
from mlcicd_dagster.platform.atomic import atomic_write_json

REASON_SUFFIX = ".reason.json"
_CHUNK = 1 << 20


class QuarantineError(RuntimeError):
    """The copy could not be made faithfully (the source changed, the disk is full...)."""


def _reason_path(copy_path: Path) -> Path:
    return copy_path.with_name(copy_path.name + REASON_SUFFIX)


def _split_name(name: str) -> tuple[str, str]:
    lower = name.lower()
    for suffix in (".csv.gz", ".parquet", ".csv", ".pq"):
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if stem else (name, "")


def _copy_hashing(src: Path, dst_dir: Path) -> tuple[Path, str, int]:
    import hashlib

    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".quarantine.", suffix=".tmp", dir=dst_dir)
    tmp = Path(tmp_name)
    size = 0
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                fout.write(chunk)
                size += len(chunk)
            fout.flush()
            os.fsync(fout.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, h.hexdigest(), size


def quarantine_file(src: Path, quarantine_dir: Path, reason: dict[str, Any]) -> Path:
    """Copy ``src`` into ``quarantine_dir`` (verified by SHA-256) and write its reason."""
    src = Path(src)
    quarantine_dir = Path(quarantine_dir)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    tmp, digest, size = _copy_hashing(src, quarantine_dir)
    try:
        if file_sha256(tmp) != digest:
            raise QuarantineError(f"quarantine copy of {src.name} does not match what was read")
        target = quarantine_dir / src.name
        if target.exists() and file_sha256(target) != digest:
            stem, suffix = _split_name(src.name)
            target = quarantine_dir / f"{stem}~{digest[:8]}{suffix}"
        if target.exists():
            tmp.unlink()  # same bytes already there: idempotent
        else:
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    record = {
        "file": src.name,
        "source": str(src),
        "quarantined_as": target.name,
        "sha256": digest,
        "size_bytes": size,
        "quarantined_at": dt.datetime.now(dt.UTC).isoformat(),
        "copied": True,
        **{k: v for k, v in reason.items() if k not in ("file", "sha256", "copied")},
    }
    atomic_write_json(_reason_path(target), record)
    return target


def record_refusal(
    name: str, quarantine_dir: Path, reason: dict[str, Any], *, source: Path | None = None
) -> Path:
    """A reason JSON (no copy) for a landed entry that must not be read; returns its path."""
    quarantine_dir = Path(quarantine_dir)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    path = quarantine_dir / f"{name}{REASON_SUFFIX}"
    record = {
        "file": name,
        "source": None if source is None else str(source),
        "quarantined_as": None,
        "copied": False,
        "quarantined_at": dt.datetime.now(dt.UTC).isoformat(),
        **reason,
    }
    atomic_write_json(path, record)
    return path


def list_quarantined(quarantine_dir: Path) -> list[dict[str, Any]]:
    """Every quarantined batch (and refusal), newest first, as its reason JSON plus paths."""
    quarantine_dir = Path(quarantine_dir)
    if not quarantine_dir.is_dir():
        return []
    out: list[dict[str, Any]] = []
    for path in quarantine_dir.iterdir():
        if not path.name.endswith(REASON_SUFFIX) or path.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        record["reason_path"] = str(path)
        copy_name = record.get("quarantined_as")
        record["path"] = str(quarantine_dir / copy_name) if copy_name else None
        out.append(record)
    out.sort(key=lambda r: str(r.get("quarantined_at", "")), reverse=True)
    return out
