"""Read one landed batch file into a DataFrame, or say clearly why it cannot be read.

Accepted shapes: CSV (``,``-separated, UTF-8 with or without BOM, LF or CRLF line
endings, optionally gzip-compressed as ``.csv.gz``) and Parquet. Every failure is a
:class:`BatchReadError` with a short machine-readable ``reason`` (used in the
quarantine JSON and the Dagster UI) and a ``details`` dict; nothing else escapes.

Memory: a file is refused before reading when it is larger than ``max_bytes``
(on disk) or, for Parquet, when its footer says the decoded table would exceed
``max_memory_bytes``. Refusing is the documented policy rather than chunked
validation, because an accepted batch must fit in memory to be written to the
lake and trained on anyway; raise the limits if the machine is larger.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import pandas as pd

#: Default on-disk size limit (bytes). CSV decodes to roughly its own size in float64.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: Default limit on the decoded in-memory size (bytes), checked from Parquet metadata.
DEFAULT_MAX_MEMORY_BYTES = 2 * 1024 * 1024 * 1024
#: Delimiters people use by mistake; named in the error when the header splits on them.
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}
_PARQUET_MAGIC = b"PAR1"


class BatchReadError(Exception):
    """A batch that cannot be read. ``reason`` is a stable short code, ``details`` a dict."""

    def __init__(self, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message, "details": self.details}


def batch_format(path: Path) -> str:
    """``csv``, ``csv.gz`` or ``parquet`` from the name; BatchReadError otherwise."""
    lower = path.name.lower()
    if lower.endswith(".csv.gz"):
        return "csv.gz"
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    raise BatchReadError(
        "unsupported_format",
        f"{path.name!r} is not .csv, .csv.gz or .parquet",
        {"file": path.name},
    )


def read_batch(
    path: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
) -> pd.DataFrame:
    """Read a landed CSV or Parquet batch; raise :class:`BatchReadError` with a reason."""
    path = Path(path)
    fmt = batch_format(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BatchReadError("unreadable", str(exc), {"file": path.name}) from exc
    if size > max_bytes:
        raise BatchReadError(
            "too_large",
            f"file is {size} bytes, over the {max_bytes}-byte limit; split it into smaller "
            "batches (or raise max_bytes)",
            {"file": path.name, "size_bytes": size, "max_bytes": max_bytes},
        )
    if size == 0:
        raise BatchReadError("empty", "the file is empty (0 bytes)", {"file": path.name})
    if fmt == "parquet":
        df = _read_parquet(path, size, max_memory_bytes)
    else:
        df = _read_csv(path, gz=fmt == "csv.gz", max_memory_bytes=max_memory_bytes)
    if len(df) == 0:
        raise BatchReadError(
            "no_rows",
            "the file has a header but no data rows",
            {"file": path.name, "columns": [str(c) for c in df.columns]},
        )
    return df


def _read_csv(path: Path, *, gz: bool, max_memory_bytes: int) -> pd.DataFrame:
    details: dict[str, Any] = {"file": path.name}
    try:
        if gz:
            with gzip.open(path, "rb") as fh:
                # A gzip bomb must not run us out of memory: read at most the limit + 1.
                raw = fh.read(max_memory_bytes + 1)
            if len(raw) > max_memory_bytes:
                raise BatchReadError(
                    "too_large",
                    f"decompressed size exceeds the {max_memory_bytes}-byte limit",
                    {**details, "max_memory_bytes": max_memory_bytes},
                )
            import io

            source: Any = io.BytesIO(raw)
        else:
            source = path
        df = pd.read_csv(
            source,
            encoding="utf-8-sig",  # strips a UTF-8 BOM when present
            encoding_errors="strict",
            low_memory=False,
        )
    except BatchReadError:
        raise
    except UnicodeDecodeError as exc:
        raise BatchReadError(
            "not_utf8",
            f"bytes that are not UTF-8 at offset {exc.start}; save the file as UTF-8",
            {**details, "offset": exc.start, "bytes": exc.object[exc.start : exc.end].hex()},
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise BatchReadError("empty", "the file has no header and no rows", details) from exc
    except pd.errors.ParserError as exc:
        raise BatchReadError("malformed_csv", str(exc).strip(), details) from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise BatchReadError("corrupt", f"cannot read the file: {exc}", details) from exc
    if df.shape[1] == 1:
        header = str(df.columns[0])
        for delim, label in _OTHER_DELIMITERS.items():
            if delim in header:
                raise BatchReadError(
                    "wrong_delimiter",
                    f"the header splits on {label} ({delim!r}), not on commas; "
                    "batches must be comma-separated",
                    {**details, "delimiter_found": delim, "header": header[:200]},
                )
    unnamed = [str(c) for c in df.columns if str(c).startswith("Unnamed: ")]
    if unnamed and len(unnamed) == df.shape[1]:
        raise BatchReadError("no_header", "the file has no header row", details)
    return df


def _read_parquet(path: Path, size: int, max_memory_bytes: int) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    details: dict[str, Any] = {"file": path.name, "size_bytes": size}
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(max(size - 4, 0))
        tail = fh.read(4)
    if head != _PARQUET_MAGIC or tail != _PARQUET_MAGIC or size < 12:
        where = "start" if head != _PARQUET_MAGIC else "end"
        raise BatchReadError(
            "corrupt_parquet",
            f"not a complete Parquet file (no PAR1 marker at the {where}: truncated or "
            "not Parquet)",
            details,
        )
    try:
        meta = pq.ParquetFile(path).metadata
        decoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if decoded > max_memory_bytes:
            raise BatchReadError(
                "too_large",
                f"decoded size {decoded} bytes exceeds the {max_memory_bytes}-byte limit",
                {**details, "decoded_bytes": decoded, "max_memory_bytes": max_memory_bytes},
            )
        table = pq.read_table(path)
        return table.to_pandas()
    except BatchReadError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BatchReadError(
            "corrupt_parquet", f"the Parquet file cannot be decoded: {exc}", details
        ) from exc
