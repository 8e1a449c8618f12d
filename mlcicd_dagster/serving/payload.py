"""Parse and validate ``/invocations`` bodies (the MLflow scoring protocol) without pandas.

Accepted JSON bodies (exactly one of these keys; ``params`` is allowed and ignored):

* ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` (``index`` ignored)
* ``{"dataframe_records": [{"col": value, ...}, ...]}``
* ``{"instances": [...]}``: a list of records (objects) or of rows (lists, in the model's
  feature order)
* ``{"inputs": ...}``: columns (``{"col": [values...]}``), one record (``{"col": value}``),
  or a list as for ``instances``

Every feature value must be a JSON number (no strings, booleans, nulls, nested values, and
no infinities). Columns the model does not use are ignored (as MLflow's scoring server
does). Each problem raises :class:`PayloadError` whose message names it: the server turns
it into a 4xx JSON answer.

The hot path (single rows, ``dataframe_split`` or records) does a handful of type checks
per value and one ``np.array`` call: a few microseconds per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_ALLOWED_EXTRA_KEYS = frozenset({"params"})
_NUMBER_TYPES = (int, float)


class PayloadError(ValueError):
    """A request body that cannot be scored; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class Table:
    """A parsed body: rows (positional or with named columns), records, or columns."""

    __slots__ = ("kind", "columns", "rows", "records", "column_values", "n_rows", "_cache")

    def __init__(
        self,
        kind: str,
        *,
        columns: list[str] | None = None,
        rows: list[Any] | None = None,
        records: list[Any] | None = None,
        column_values: dict[str, Any] | None = None,
        n_rows: int,
    ):
        self.kind = kind  # "rows" | "records" | "columns"
        self.columns = columns
        self.rows = rows
        self.records = records
        self.column_values = column_values
        self.n_rows = n_rows
        self._cache: dict[tuple[str, ...], np.ndarray] = {}

    def matrix(self, feature_names: Sequence[str]) -> np.ndarray:
        """The rows as a float64 ``(n, len(feature_names))`` array, validated."""
        key = tuple(feature_names)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if self.kind == "rows":
            out = self._from_rows(key)
        elif self.kind == "records":
            out = self._from_records(key)
        else:
            out = self._from_columns(key)
        if not np.isfinite(out).all():
            bad = [key[j] for j in np.flatnonzero(~np.isfinite(out).all(axis=0))]
            raise PayloadError(f"non-finite value(s) in column(s): {', '.join(bad)}")
        self._cache[key] = out
        return out

    # -- per layout ------------------------------------------------------------
    def _from_rows(self, names: tuple[str, ...]) -> np.ndarray:
        rows = self.rows or []
        columns = self.columns
        if columns is None:  # positional rows: must be exactly the model's features
            width = len(names)
            for i, row in enumerate(rows):
                if type(row) is not list:
                    raise PayloadError(f"row {i} is {_type_name(row)}, expected an array")
                if len(row) != width:
                    raise PayloadError(
                        f"row {i} has {len(row)} values, expected {width} "
                        f"(the model's features in order: {', '.join(names)})"
                    )
            selected = rows
            col_names: Sequence[str] = names
        else:
            width = len(columns)
            for i, row in enumerate(rows):
                if type(row) is not list:
                    raise PayloadError(f"data row {i} is {_type_name(row)}, expected an array")
                if len(row) != width:
                    raise PayloadError(
                        f"ragged data: row {i} has {len(row)} values but there are {width} columns"
                    )
            if list(names) == columns:
                selected = rows
                col_names = names
            else:
                position = {c: j for j, c in enumerate(columns)}
                missing = [n for n in names if n not in position]
                if missing:
                    raise PayloadError(f"missing column(s): {', '.join(missing)}")
                idx = [position[n] for n in names]
                selected = [[row[j] for j in idx] for row in rows]
                col_names = names
        _check_numbers(selected, col_names)
        return np.array(selected, dtype=np.float64).reshape(len(selected), len(names))

    def _from_records(self, names: tuple[str, ...]) -> np.ndarray:
        records = self.records or []
        out = []
        for i, rec in enumerate(records):
            if type(rec) is not dict:
                raise PayloadError(f"record {i} is {_type_name(rec)}, expected an object")
            try:
                out.append([rec[n] for n in names])
            except KeyError:
                missing = [n for n in names if n not in rec]
                raise PayloadError(
                    f"record {i} is missing column(s): {', '.join(missing)}"
                ) from None
        _check_numbers(out, names)
        return np.array(out, dtype=np.float64).reshape(len(out), len(names))

    def _from_columns(self, names: tuple[str, ...]) -> np.ndarray:
        values = self.column_values or {}
        missing = [n for n in names if n not in values]
        if missing:
            raise PayloadError(f"missing column(s): {', '.join(missing)}")
        cols = [values[n] for n in names]
        rows = [list(r) for r in zip(*cols, strict=True)] if cols else []
        _check_numbers(rows, names)
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(names))


def _check_numbers(rows: list[Any], names: Sequence[str]) -> None:
    """Every value a JSON number (bool is not one); else name the first offender."""
    num = _NUMBER_TYPES
    for row in rows:
        for v in row:
            if type(v) not in num:
                break
        else:
            continue
        break
    else:
        return
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if type(v) not in num:
                if v is None:
                    raise PayloadError(f"null value in column '{names[j]}' (row {i})")
                raise PayloadError(
                    f"wrong type in column '{names[j]}' (row {i}): expected a number, "
                    f"got {_type_name(v)}"
                )


def parse_body(obj: Any, max_rows: int) -> Table:
    """Turn a decoded JSON body into a :class:`Table` (structure checks only)."""
    if type(obj) is not dict:
        raise PayloadError(
            f"body must be a JSON object with one of {', '.join(FORMATS)}; got {_type_name(obj)}"
        )
    found = [k for k in obj if k in FORMATS]
    unknown = [k for k in obj if k not in FORMATS and k not in _ALLOWED_EXTRA_KEYS]
    if len(found) != 1 or unknown:
        if unknown and not found:
            raise PayloadError(
                f"unknown input format {', '.join(map(repr, unknown))}; expected one of "
                f"{', '.join(FORMATS)}"
            )
        if unknown:
            raise PayloadError(f"unexpected key(s) in body: {', '.join(map(repr, unknown))}")
        if not found:
            raise PayloadError(f"body has none of the input formats {', '.join(FORMATS)}")
        raise PayloadError(f"body has more than one input format: {', '.join(found)}")
    fmt = found[0]
    value = obj[fmt]
    if fmt == "dataframe_split":
        table = _parse_split(value)
    elif fmt == "dataframe_records":
        if type(value) is not list:
            raise PayloadError(
                f"dataframe_records must be an array of objects, got {_type_name(value)}"
            )
        table = Table("records", records=value, n_rows=len(value))
    elif fmt == "instances":
        table = _parse_list(value, "instances")
    else:
        table = _parse_inputs(value)
    if table.n_rows == 0:
        raise PayloadError(f"{fmt} has no rows")
    if table.n_rows > max_rows:
        raise PayloadError(
            f"{table.n_rows} rows in one request; the limit is {max_rows}", status=413
        )
    return table


def _parse_split(value: Any) -> Table:
    if type(value) is not dict:
        raise PayloadError(
            f"dataframe_split must be an object with 'columns' and 'data', got {_type_name(value)}"
        )
    columns = value.get("columns")
    data = value.get("data")
    if type(columns) is not list:
        raise PayloadError("dataframe_split.columns must be an array of column names")
    if type(data) is not list:
        raise PayloadError("dataframe_split.data must be an array of rows")
    for c in columns:
        if type(c) is not str:
            raise PayloadError(f"column names must be strings, got {_type_name(c)}")
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise PayloadError(f"duplicate column(s): {', '.join(dupes)}")
    return Table("rows", columns=columns, rows=data, n_rows=len(data))


def _parse_list(value: Any, fmt: str) -> Table:
    if type(value) is not list:
        raise PayloadError(f"{fmt} must be an array, got {_type_name(value)}")
    if not value:
        return Table("rows", rows=value, n_rows=0)
    first = value[0]
    if type(first) is dict:
        return Table("records", records=value, n_rows=len(value))
    if type(first) is list:
        return Table("rows", rows=value, n_rows=len(value))
    raise PayloadError(
        f"{fmt} must be an array of objects (records) or of arrays (rows), got an array of "
        f"{_type_name(first)}"
    )


def _parse_inputs(value: Any) -> Table:
    if type(value) is list:
        return _parse_list(value, "inputs")
    if type(value) is not dict:
        raise PayloadError(f"inputs must be an object or an array, got {_type_name(value)}")
    if not value:
        return Table("columns", column_values={}, n_rows=0)
    kinds = {type(v) is list for v in value.values()}
    if kinds == {True}:  # columnar: {"col": [v0, v1, ...]}
        lengths = {len(v) for v in value.values()}
        if len(lengths) != 1:
            detail = ", ".join(f"{k}={len(v)}" for k, v in value.items())
            raise PayloadError(f"ragged inputs: columns have different lengths ({detail})")
        return Table("columns", column_values=value, n_rows=lengths.pop())
    if kinds == {False}:  # one record: {"col": v}
        return Table("records", records=[value], n_rows=1)
    raise PayloadError("inputs mixes array and scalar values; use all arrays (columns) or none")


# ---------------------------------------------------------------------------------------
# the fast path (``mlflow_compat``): well-formed bodies scored without pandas
# ---------------------------------------------------------------------------------------
_EXACT = 2.0**53  # integers beyond this do not survive float64; MLflow's path decides


def fast_matrix(obj: Any, spec: Any) -> np.ndarray | None:
    """The feature matrix of a body MLflow would score with exactly these values, else None.

    ``spec``: the model's ``mlflow_compat.FastSpec``. Taken: a JSON object with exactly one
    key of ``dataframe_split`` (``columns`` + ``data`` only), ``dataframe_records``,
    ``instances`` (records) or ``inputs`` (columns, one record, or records); every feature
    present in every row, integer columns holding JSON integers (or integral floats), text
    columns JSON strings and the others JSON numbers; extra columns (MLflow drops them).
    A tensor-signature model (``spec.positional``) takes ``dataframe_split`` and
    ``dataframe_records`` whose columns are exactly its features in order, and rows of
    numbers (``inputs``/``instances``), as MLflow does (by position). Anything else
    (``params``, ``index``, strings in number columns, nulls, booleans, no rows...) returns
    None and goes through MLflow's own code.

    The matrix is float64, or an object matrix (numbers as floats, text as str) for a model
    with text columns.
    """
    if type(obj) is not dict or len(obj) != 1:
        return None
    names = spec.names
    ((fmt, value),) = obj.items()
    if spec.positional:
        rows = _positional_rows(fmt, value, names)
        if rows is None:
            return None
    elif fmt == "dataframe_split":
        if type(value) is not dict or len(value) != 2:
            return None
        columns = value.get("columns")
        data = value.get("data")
        if type(columns) is not list or type(data) is not list or not data:
            return None
        width = len(columns)
        if len(names) == width and spec.names_list == columns:
            for row in data:
                if type(row) is not list or len(row) != width:
                    return None
            rows = data
        else:
            try:
                position = {c: j for j, c in enumerate(columns)}
                idx = [position[n] for n in names]
            except (KeyError, TypeError):  # a missing feature, an unhashable column name
                return None
            if len(position) != width:  # duplicate column names
                return None
            rows = []
            for row in data:
                if type(row) is not list or len(row) != width:
                    return None
                rows.append([row[j] for j in idx])
    elif fmt in ("dataframe_records", "instances") or (fmt == "inputs" and type(value) is list):
        if type(value) is not list or not value:
            return None
        rows = []
        for rec in value:
            if type(rec) is not dict:
                return None
            try:
                rows.append([rec[n] for n in names])
            except KeyError:
                return None
    elif fmt == "inputs" and type(value) is dict and value:
        first = next(iter(value.values()))
        if type(first) is list:  # columns {"col": [...]}
            try:
                cols = [value[n] for n in names]
            except KeyError:
                return None
            n_rows = len(first)
            if not n_rows:
                return None
            for c in value.values():
                if type(c) is not list or len(c) != n_rows:
                    return None
            rows = [list(r) for r in zip(*cols, strict=True)]
        else:  # one record {"col": v}
            for v in value.values():
                if type(v) is list or type(v) is dict:
                    return None
            try:
                rows = [[value[n] for n in names]]
            except KeyError:
                return None
    else:
        return None
    if spec.any_text:
        return _text_matrix(rows, spec)
    if not _typed(rows, spec.integer):
        return None  # a value of another type, or huge: MLflow's conversion rules decide
    return np.array(rows, dtype=np.float64)


def _positional_rows(fmt: str, value: Any, names: Sequence[str]) -> list[Any] | None:
    """A tensor model's rows, when the body's columns are its features in its order."""
    width = len(names)
    if fmt == "dataframe_split":
        if type(value) is not dict or len(value) != 2:
            return None
        data = value.get("data")
        if value.get("columns") != list(names) or type(data) is not list or not data:
            return None
    elif fmt == "dataframe_records":
        if type(value) is not list or not value:
            return None
        order = list(names)
        data = []
        for rec in value:
            if type(rec) is not dict or list(rec) != order:
                return None
            data.append(list(rec.values()))
        return data
    elif fmt in ("inputs", "instances"):
        data = value
        if type(data) is not list or not data:
            return None
    else:
        return None
    for row in data:
        if type(row) is not list or len(row) != width:
            return None
    return data


def _text_matrix(rows: list[Any], spec: Any) -> np.ndarray | None:
    """An object matrix for a model with text columns: text columns hold JSON strings, the
    others numbers (integer columns whole numbers); else None (MLflow's path decides)."""
    kinds = [2 if t else 1 if i else 0 for t, i in zip(spec.text, spec.integer, strict=True)]
    for row in rows:
        for v, k in zip(row, kinds, strict=True):
            t = type(v)
            if k == 2:
                if t is not str:
                    return None
            elif t is int:
                if not -_EXACT < v < _EXACT:
                    return None
            elif t is not float or (k == 1 and not v.is_integer()) or not abs(v) < _EXACT:
                return None
    out = np.array(rows, dtype=object)
    for j, k in enumerate(kinds):
        if k != 2:
            out[:, j] = out[:, j].astype(np.float64)
    return out


def _typed(rows: list[Any], integer: Sequence[bool]) -> bool:
    """Integer columns hold ints (or integral floats, ``35.0``: what ``df.values.tolist()``
    sends; MLflow casts them to the same integer), the others ints or floats (bool is
    neither); every value finite and exact in float64 (``|v| < 2**53``; else MLflow's
    conversion rules decide). Plain Python checks: cheaper than numpy's on a row or two."""
    lo, hi = -_EXACT, _EXACT
    if True not in integer:
        for row in rows:
            for v in row:
                t = type(v)
                if (t is not float and t is not int) or not lo < v < hi:
                    return False
        return True
    for row in rows:
        for v, want_int in zip(row, integer, strict=True):
            t = type(v)
            if t is int:
                if not lo < v < hi:
                    return False
            elif t is not float or not lo < v < hi or (want_int and not v.is_integer()):
                return False
    return True
