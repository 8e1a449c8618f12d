"""Profile a data file: what each column is, how it is filled, what values it takes.

The profile is what ``mlcicd init`` writes the data suite and the pipeline from:
per column its kind (``integer``, ``float``, ``bool``, ``string``), its null rate,
its range and tail (numbers), its categories (codes and strings), and its role
(``id``, ``label``, ``numeric`` or ``categorical`` feature). The task is inferred
from the label when not given:

* ``binary``: the label takes exactly two values;
* ``multiclass``: strings or booleans, or whole numbers with at most
  :data:`MAX_CLASSES` values;
* ``regression``: numbers with fractional values, or whole numbers with more
  distinct values than a class list would have.

Nothing here imports a heavy library; pandas and numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.init.errors import InitError

TASKS = ("binary", "multiclass", "regression")
#: Whole-number labels with more distinct values than this are a regression target.
MAX_CLASSES = 20
#: Integer columns with at most this many distinct values are categorical codes.
MAX_CODE_LEVELS = 12
#: String columns with more distinct values than this (and than 5% of the rows) are
#: free text or identifiers, not categories: their values are not listed in the suite.
MAX_CATEGORIES = 100
#: Categories kept in the profile (the rest are counted as "other").
TOP_CATEGORIES = 200


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    kind: str  # integer | float | bool | string
    role: str  # id | label | numeric | categorical | text
    rows: int
    nulls: int
    distinct: int
    minimum: float | None = None
    maximum: float | None = None
    q01: float | None = None
    q99: float | None = None
    #: mean excess over q99 (how far the upper tail reaches beyond its 99th percentile)
    upper_excess: float | None = None
    #: mean excess below q01
    lower_excess: float | None = None
    whole: bool = False  # every non-null number is a whole number
    categories: tuple[Any, ...] = ()  # sorted; all values when the column is categorical
    category_counts: tuple[int, ...] = ()
    mean: float | None = None

    @property
    def null_rate(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0

    @property
    def numeric(self) -> bool:
        return self.kind in ("integer", "float")


@dataclass(frozen=True)
class DataProfile:
    rows: int
    label: str
    id_column: str | None
    task: str
    task_inferred: bool
    columns: tuple[ColumnProfile, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def column(self, name: str) -> ColumnProfile:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def label_profile(self) -> ColumnProfile:
        return self.column(self.label)

    @property
    def numeric_features(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.role == "numeric")

    @property
    def categorical_features(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.role == "categorical")

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric_features, *self.categorical_features)

    @property
    def classes(self) -> tuple[Any, ...]:
        """The label's values (classification), sorted; empty for regression."""
        return () if self.task == "regression" else self.label_profile.categories


def _kind(series: pd.Series) -> tuple[str, bool]:
    """(kind, whole): the column's kind, and whether its numbers are all whole."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool", False
    if pd.api.types.is_integer_dtype(dtype):
        return "integer", True
    if pd.api.types.is_float_dtype(dtype):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        finite = values[np.isfinite(values)]
        whole = bool(finite.size) and bool(np.all(finite == np.round(finite)))
        # Whole numbers read as floats because of missing values are integers with nulls.
        return ("integer" if whole and series.isna().any() else "float"), whole
    return "string", False


def _python(value: Any) -> Any:
    """A plain Python scalar (YAML- and JSON-safe)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def profile_column(series: pd.Series, role: str) -> ColumnProfile:
    name = str(series.name)
    rows = len(series)
    nonnull = series.dropna()
    nulls = rows - len(nonnull)
    kind, whole = _kind(series)
    distinct = int(nonnull.nunique())
    kw: dict[str, Any] = {}
    if kind in ("integer", "float") and len(nonnull):
        values = nonnull.to_numpy(dtype="float64")
        finite = values[np.isfinite(values)]
        if finite.size:
            q01, q99 = (float(v) for v in np.quantile(finite, [0.01, 0.99]))
            above, below = finite[finite > q99], finite[finite < q01]
            kw.update(
                minimum=float(finite.min()),
                maximum=float(finite.max()),
                q01=q01,
                q99=q99,
                upper_excess=float((above - q99).mean()) if above.size else 0.0,
                lower_excess=float((q01 - below).mean()) if below.size else 0.0,
                mean=float(finite.mean()),
            )
    if role in ("label", "categorical") or (kind in ("string", "bool") and distinct):
        counts = nonnull.value_counts()
        if len(counts) > TOP_CATEGORIES:
            counts = counts.iloc[:TOP_CATEGORIES]
        try:
            order = sorted(counts.index, key=_python)
        except TypeError:  # mixed types: sort by their text
            order = sorted(counts.index, key=str)
        kw["categories"] = tuple(_python(v) for v in order)
        kw["category_counts"] = tuple(int(counts[v]) for v in order)
    return ColumnProfile(
        name=name,
        kind=kind,
        role=role,
        rows=rows,
        nulls=nulls,
        distinct=distinct,
        whole=whole,
        **kw,
    )


def infer_task(label: pd.Series) -> str:
    """``binary``, ``multiclass`` or ``regression`` from the label's values."""
    values = label.dropna()
    distinct = int(values.nunique())
    if distinct == 2:
        return "binary"
    kind, whole = _kind(label)
    if kind in ("string", "bool"):
        return "multiclass"
    if whole and distinct <= MAX_CLASSES:
        return "multiclass"
    return "regression"


def _feature_role(series: pd.Series, rows: int) -> str:
    kind, _ = _kind(series)
    distinct = int(series.nunique(dropna=True))
    if kind == "bool":
        return "categorical"
    if kind == "string":
        if distinct > MAX_CATEGORIES and distinct > 0.05 * rows:
            return "text"
        return "categorical"
    if kind == "integer" and distinct <= MAX_CODE_LEVELS:
        return "categorical"
    return "numeric"


def profile_frame(
    df: pd.DataFrame, *, label: str, id_column: str | None = None, task: str | None = None
) -> DataProfile:
    """Profile ``df``; :class:`InitError` names what makes it unusable."""
    columns = [str(c) for c in df.columns]
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise InitError(f"duplicate column name(s) in the data: {', '.join(dup)}")
    if label not in df.columns:
        raise InitError(
            f"label column {label!r} is not in the data; its columns are: {', '.join(columns)}"
        )
    if id_column is not None and id_column not in df.columns:
        raise InitError(f"id column {id_column!r} is not in the data")
    if id_column == label:
        raise InitError("the id column and the label cannot be the same column")
    if task is not None and task not in TASKS:
        raise InitError(f"task {task!r} is not one of {', '.join(TASKS)}")
    y = df[label]
    if y.isna().any():
        n = int(y.isna().sum())
        raise InitError(
            f"label {label!r} is missing in {n} of {len(df)} rows: every row must be labelled "
            "(drop the unlabelled rows first)"
        )
    inferred = task is None
    task = task or infer_task(y)
    distinct = int(y.nunique())
    if task != "regression" and distinct < 2:
        raise InitError(
            f"label {label!r} has one class only ({_python(y.iloc[0])!r}): a classifier needs "
            "examples of at least two classes"
        )
    if task == "binary" and distinct != 2:
        raise InitError(f"task binary needs exactly two label values, {label!r} has {distinct}")
    if task == "regression":
        if _kind(y)[0] not in ("integer", "float"):
            raise InitError(f"task regression needs a numeric label, {label!r} is {y.dtype}")
        if distinct < 2:
            raise InitError(f"label {label!r} is constant: nothing to regress")
    notes: list[str] = []
    profiles: list[ColumnProfile] = []
    for name in df.columns:
        col = df[name]
        if name == label:
            role = "label"
        elif name == id_column:
            role = "id"
        else:
            role = _feature_role(col, len(df))
            if role == "text":
                notes.append(
                    f"{name}: {col.nunique()} distinct strings (free text or an identifier), "
                    "not used as a feature"
                )
        profiles.append(profile_column(col, role))
    if id_column is not None:
        ids = df[id_column]
        if ids.isna().any() or not ids.is_unique:
            raise InitError(
                f"id column {id_column!r} must be unique and never empty: "
                f"{int(ids.duplicated().sum())} duplicate(s), {int(ids.isna().sum())} empty"
            )
    if not any(p.role in ("numeric", "categorical") for p in profiles):
        raise InitError("no feature columns: the data has only the label (and the id)")
    return DataProfile(
        rows=len(df),
        label=label,
        id_column=id_column,
        task=task,
        task_inferred=inferred,
        columns=tuple(profiles),
        notes=tuple(notes),
    )
