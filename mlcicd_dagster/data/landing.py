"""The landing zone: find new, finished batch files cheaply, never read one half-written.

Landing convention (also in docs/data.md, "Landing convention")
------------------------------------------------------------------
* Users drop ``.csv`` / ``.parquet`` (also ``.csv.gz``) files directly in
  ``MLCICD_HOME/landing/<dataset>/``. Sub-folders are not looked into.
* The system only reads there: it never edits, moves or deletes a landed file.
* **Writers should write to a temporary name, then rename**: names starting with
  ``.`` or ending in ``.tmp`` / ``.part`` / ``.partial`` / ``.crdownload`` are
  ignored, and a ``rename`` into the final name is atomic.
* For writers that cannot rename (a slow ``cp``, a network copy), a file is only
  picked up once it has been *quiet* for ``settle_seconds``: its inode change time
  (``ctime``, bumped by every write, truncate, chmod, utime or rename, and not
  settable by users) must be at least ``settle_seconds`` old. A copy that keeps
  writing is therefore never read mid-way. A writer that stalls for longer than
  ``settle_seconds`` and then resumes produces a new ``ctime``: the file is
  offered again (same partition key) and re-processed, so the truncated first
  read, which fails validation and is quarantined, is superseded.
* A symlink is followed only when its target is a regular file inside the zone;
  one pointing outside (or dangling) is refused with a reason and never read.
* Unsupported file types are refused with a reason (once), not silently ignored.

Cursor
------
A tick lists the folder once with ``os.scandir`` (one ``lstat`` per entry, no
reads). The cursor is a small JSON: a watermark ``w`` (ns) such that every file
whose ``ctime <= w`` was already offered, plus the names offered in the last
``lookback`` window (``recent``), which absorbs coarse filesystem timestamps and
modest clock skew on network filesystems. A tick offers files with
``w_prev - lookback < ctime <= now - settle`` that are not in ``recent`` with the
same ``ctime``. Because the watermark only advances to ``now - settle`` and a file
becomes visible no later than its ``ctime`` (plus timestamp granularity), no file
can appear "behind" the watermark unseen.

Run keys
--------
A file's run key is its partition key plus a hash of its *content*
(:func:`content_run_key`), never a file time: a home restored from a backup or
copied elsewhere has new ``ctime``s everywhere, so the scan offers every file
again, and the content key finds each one already ingested. A stalled write that
resumes changes the content, hence the key, and the file is ingested again.

Dagster-free on purpose: a sensor calls :func:`scan_landing` and turns
``ScanResult.new`` into dynamic partitions and run requests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Extensions a batch may have (lower-cased); everything else is refused.
SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
#: Names that mark an unfinished write: never looked at.
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")
#: Default quiet time before a file counts as finished (a slow copy writes more often).
DEFAULT_SETTLE_SECONDS = 2.0
#: Filesystem timestamps are coarse (jiffies) and NFS clocks drift: re-look this far back.
DEFAULT_LOOKBACK_SECONDS = 120.0
#: Dagster partition keys must avoid these; our safe alphabet avoids them by construction.
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_.\-]+")
_CURSOR_VERSION = 1


@dataclass(frozen=True)
class LandedFile:
    """A finished batch file, ready to be read."""

    name: str
    path: Path
    size: int
    mtime_ns: int
    ctime_ns: int
    partition_key: str

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass(frozen=True)
class Refusal:
    """A landed entry the system will not read, and why (offered once, like a file)."""

    name: str
    path: Path
    reason: str
    partition_key: str

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "reason": self.reason,
            "partition_key": self.partition_key,
        }


@dataclass
class ScanResult:
    new: list[LandedFile] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    #: Files seen but not yet quiet for ``settle_seconds`` (looked at again next tick).
    pending: list[str] = field(default_factory=list)
    cursor: str = ""


def partition_key_for(name: str) -> str:
    """A Dagster-safe dynamic partition key, stable and unique for the file name.

    A name made only of ``[A-Za-z0-9_.-]`` (at most 100 characters, no ``...``) is its
    own key, so keys stay readable. Any other name becomes an ASCII slug of it plus
    ``~`` and 10 hex digits of the SHA-256 of the exact (NFC-normalised) name: ``~``
    never appears in a plain key, so the two families cannot collide, and two names
    that slug alike still differ by their hash. Keys are also safe file names.
    """
    norm = unicodedata.normalize("NFC", name)
    if _SAFE_KEY.match(norm) and "..." not in norm:
        return norm
    ascii_name = unicodedata.normalize("NFKD", norm).encode("ascii", "ignore").decode()
    slug = _UNSAFE_RUN.sub("_", ascii_name).strip("._-")
    slug = re.sub(r"\.{2,}", ".", slug)[:80] or "file"
    digest = hashlib.sha256(norm.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{slug}~{digest}"


def content_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def content_run_key(f: LandedFile) -> str:
    """``<partition key>@<first 20 hex digits of the content's SHA-256>``."""
    return f"{f.partition_key}@{content_sha256(f.path)[:20]}"


def is_in_progress_name(name: str) -> bool:
    """Names the convention reserves for files being written."""
    lower = name.lower()
    return name.startswith(".") or lower.endswith(IN_PROGRESS_SUFFIXES)


def is_supported_name(name: str) -> bool:
    return name.lower().endswith(SUPPORTED_SUFFIXES)


def _load_cursor(cursor: str | None) -> tuple[int, dict[str, int]]:
    if not cursor:
        return 0, {}
    try:
        raw = json.loads(cursor)
        if raw.get("v") != _CURSOR_VERSION:
            raise ValueError("version")
        return int(raw["w"]), {str(k): int(v) for k, v in raw.get("recent", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"landing cursor is not one scan_landing wrote: {cursor[:80]!r}") from exc


def _dump_cursor(watermark: int, recent: dict[str, int]) -> str:
    return json.dumps({"v": _CURSOR_VERSION, "w": watermark, "recent": recent}, sort_keys=True)


def _symlink_refusal(entry: os.DirEntry[str], zone: Path) -> str | None:
    """None when the link is a regular file inside the zone, else why it is refused."""
    try:
        target = Path(os.path.realpath(entry.path))
    except OSError as exc:  # pragma: no cover - loops raise on some platforms
        return f"symlink cannot be resolved: {exc}"
    if not target.is_relative_to(zone):
        return f"symlink points outside the landing zone (to {target}); not followed"
    if not target.exists():
        return f"dangling symlink (to {target})"
    if not target.is_file():
        return f"symlink does not point to a regular file (to {target})"
    return None


def scan_landing(
    landing_dir: Path,
    cursor: str | None,
    *,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    now: float | None = None,
    lookback_seconds: float = DEFAULT_LOOKBACK_SECONDS,
) -> ScanResult:
    """One sensor tick over ``landing_dir``: new finished files, refusals, next cursor.

    ``now`` (seconds since the epoch) is for tests; it defaults to ``time.time()``.
    A missing landing folder is an empty one. Raises ``ValueError`` on a foreign cursor.
    """
    zone = Path(os.path.realpath(landing_dir))
    now_ns = int((time.time() if now is None else now) * 1e9)
    settle_ns = int(max(settle_seconds, 0.0) * 1e9)
    lookback_ns = int(max(lookback_seconds, 0.0) * 1e9)
    prev_w, recent = _load_cursor(cursor)
    new_w = max(prev_w, now_ns - settle_ns)
    floor = prev_w - lookback_ns
    result = ScanResult()
    next_recent: dict[str, int] = {}
    keep_from = new_w - lookback_ns

    try:
        it = os.scandir(zone)
    except FileNotFoundError:
        result.cursor = _dump_cursor(new_w, {k: v for k, v in recent.items() if v > keep_from})
        return result
    with it:
        for entry in it:
            name = entry.name
            if is_in_progress_name(name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # vanished between listing and stat
                continue
            ctime = st.st_ctime_ns
            if ctime <= floor or recent.get(name) == ctime:
                if ctime > keep_from and recent.get(name) == ctime:
                    next_recent[name] = ctime
                continue
            if ctime > new_w:
                result.pending.append(name)
                continue
            # Offered in this tick (as a file or a refusal): remember it.
            if ctime > keep_from:
                next_recent[name] = ctime
            path = zone / name
            key = partition_key_for(name)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                continue  # sub-folders are not part of the convention
            if stat.S_ISLNK(mode):
                why = _symlink_refusal(entry, zone)
                if why is not None:
                    result.refused.append(Refusal(name, path, why, key))
                    continue
                st = os.stat(path)
            elif not stat.S_ISREG(mode):
                result.refused.append(Refusal(name, path, "not a regular file", key))
                continue
            if not is_supported_name(name):
                result.refused.append(
                    Refusal(
                        name,
                        path,
                        f"unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})",
                        key,
                    )
                )
                continue
            result.new.append(LandedFile(name, path, st.st_size, st.st_mtime_ns, ctime, key))
    # Entries of ``recent`` not listed this time (deleted by the user) are dropped.
    result.new.sort(key=lambda f: (f.ctime_ns, f.name))
    result.cursor = _dump_cursor(new_w, next_recent)
    return result
