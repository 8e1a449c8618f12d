"""Task types: what a label is, what a model must output, and how it is scored.

One registry (``TASKS``) of three tasks, each behind the same ``Task`` interface, so
that every stage (data gate, trainers, loading, gates, canary, monitoring) asks the
task instead of assuming a binary classifier:

============  =============================  =====================================
task          label                          model output per row (``predict``)
============  =============================  =====================================
binary        one of two ``classes``         P(``classes[1]``), shape ``(n,)``
              (default ``[0, 1]``)
multiclass    one of ``classes`` (strings    probabilities of each class in the
              or ints, declared in order)    declared order, shape ``(n, k)``
regression    a finite number                the predicted value, shape ``(n,)``
============  =============================  =====================================

Labels are *encoded* before a model sees them: classification labels become the
index of their class in the declared order (``int64``), regression labels
``float64``. So a model's output columns are always in the declared class order,
whatever the label type (``"setosa"``, ``3``, ``3.0`` in a CSV with a missing value).

A model whose output does not fit the task is refused (``TaskError``) with the shape
it returned and the shape the task expects; nothing is reshaped silently. The one
accepted normalisation is ``(n, 1)`` -> ``(n,)`` for one-output tasks.

Per-row losses (``row_loss``) use the one probability clip, ``stats.PROB_CLIP``: one confident
mistake costs at most ``-log(PROB_CLIP)`` nats, so a mean of losses has a finite
variance (the canary's sequential test and the paired intervals need that).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pandas is imported where it is used: the code location loads this
    import pandas as pd

from mlcicd_dagster.models.stats import clip_probabilities, row_log_loss
from mlcicd_dagster.platform.lazy import lazy

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy("numpy")

PROBA_TOLERANCE = 1e-3
"""How far a row of class probabilities may be from summing to 1 (float32 softmax)."""


class TaskError(ValueError):
    """Labels or a model output that do not fit the declared task (message says how)."""


def label_key(value: Any) -> str | None:
    """A label as the text it is compared by; ``None`` for a missing label.

    ``3``, ``3.0``, ``np.int64(3)`` and ``"3"`` are the same class; ``True`` is ``"1"``.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if math.isfinite(value) and float(value).is_integer():
            return str(int(value))
        return repr(float(value))
    pd = sys.modules.get("pandas")  # a pandas missing value exists only once pandas does
    if pd is not None and (value is pd.NA or value is pd.NaT):
        return None
    text = str(value).strip()
    return text


@dataclass(frozen=True)
class LabelCheck:
    """Which rows' labels do not fit the task, and why (for the data gate)."""

    bad: np.ndarray  # bool mask, one per row
    reason: str  # "" when no row is bad
    counts: dict[str, int]  # offending value (as text) -> rows


class Task:
    """The interface every stage asks. Subclasses are registered in ``TASKS``."""

    name: ClassVar[str]
    classes: tuple[Any, ...] = ()

    # -- labels --------------------------------------------------------------
    def check_labels(self, labels: pd.Series | Sequence[Any]) -> LabelCheck:
        raise NotImplementedError

    def encode(self, labels: pd.Series | Sequence[Any] | np.ndarray) -> np.ndarray:
        """Labels as the model's target; raises ``TaskError`` naming bad values."""
        raise NotImplementedError

    def check_trainable(self, y: np.ndarray) -> None:
        """Refuse encoded training labels that cannot make a model (one class only)."""

    # -- outputs -------------------------------------------------------------
    @property
    def n_outputs(self) -> int:
        return 1

    def expected_shape(self) -> str:
        return "(n,)"

    def check_output(self, out: Any, n: int, *, source: str = "model") -> np.ndarray:
        """The output of a model for ``n`` rows as the task's float64 array, or raise."""
        raise NotImplementedError

    def point(self, out: np.ndarray) -> np.ndarray:
        """One number per row: predicted class index, or the predicted value."""
        raise NotImplementedError

    # -- scores --------------------------------------------------------------
    def row_loss(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Per-row loss of encoded labels ``y`` under output ``out`` (lower is better)."""
        raise NotImplementedError

    def row_error(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Per-row 0/1 error (classification) or absolute error (regression)."""
        raise NotImplementedError

    request_loss_name: ClassVar[str] = "log_loss"
    """What the canary compares per request once its label is known."""

    def request_loss(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The canary's per-request loss: the clipped log-loss of a classifier (bounded by
        ``-log(PROB_CLIP)``), the absolute error of a regression (in the label's units;
        less heavy-tailed than the squared error, so the sequential test's Gaussian
        approximation holds sooner)."""
        return self.row_loss(y, out)

    def metrics(self, y: np.ndarray, out: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    primary_metric: ClassVar[str] = "log_loss"
    """The metric the gates and the canary judge first (lower is better)."""

    # -- description ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"task": self.name, "classes": [_plain(c) for c in self.classes]}

    def __repr__(self) -> str:
        extra = f", classes={list(self.classes)}" if self.classes else ""
        return f"{type(self).__name__}({self.name!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.name, tuple(label_key(c) for c in self.classes)))


def _plain(value: Any) -> Any:
    """numpy scalars as Python values (JSON, YAML, MLflow metadata)."""
    return value.item() if isinstance(value, np.generic) else value


class _Classification(Task):
    def __init__(self, classes: Sequence[Any]):
        classes = tuple(_plain(c) for c in classes)
        keys = [label_key(c) for c in classes]
        if any(k is None or k == "" for k in keys):
            raise TaskError(f"classes must not be missing or empty, got {list(classes)}")
        if len(set(keys)) != len(keys):
            raise TaskError(f"classes must be distinct, got {list(classes)}")
        self.classes = classes
        self._index = {k: i for i, k in enumerate(keys)}

    def check_labels(self, labels: pd.Series | Sequence[Any]) -> LabelCheck:
        keys = [label_key(v) for v in _values(labels)]
        bad = np.array([k is None or k not in self._index for k in keys], dtype=bool)
        counts: dict[str, int] = {}
        for k, b in zip(keys, bad, strict=True):
            if b:
                shown = "<missing>" if k is None else k
                counts[shown] = counts.get(shown, 0) + 1
        reason = ""
        if counts:
            shown = ", ".join(f"{v!s} ({c} rows)" for v, c in sorted(counts.items())[:10])
            reason = (
                f"label not one of the declared {self.name} classes "
                f"{[_plain(c) for c in self.classes]}: {shown}"
            )
        return LabelCheck(bad, reason, counts)

    def encode(self, labels: pd.Series | Sequence[Any] | np.ndarray) -> np.ndarray:
        check = self.check_labels(labels)
        if check.bad.any():
            raise TaskError(check.reason)
        keys = [label_key(v) for v in _values(labels)]
        return np.fromiter((self._index[k] for k in keys if k is not None), np.int64, len(keys))

    def decode(self, index: np.ndarray) -> list[Any]:
        return [self.classes[int(i)] for i in np.asarray(index)]

    def check_trainable(self, y: np.ndarray) -> None:
        present = np.unique(np.asarray(y))
        if len(present) < 2:
            only = self.classes[int(present[0])] if len(present) else "none"
            raise TaskError(
                f"only one class in the training labels ({only!r}): a {self.name} model "
                f"needs rows of at least two of {list(self.classes)}"
            )
        absent = [self.classes[i] for i in range(len(self.classes)) if i not in set(present)]
        if absent:
            raise TaskError(
                f"class(es) {absent} declared for the task but absent from the training "
                "labels: the model could not learn them"
            )


class BinaryTask(_Classification):
    """Two classes; the model outputs P(``classes[1]``) per row."""

    name = "binary"
    primary_metric = "log_loss"

    def __init__(self, classes: Sequence[Any] = (0, 1)):
        super().__init__(classes)
        if len(self.classes) != 2:
            raise TaskError(f"a binary task has exactly 2 classes, got {list(self.classes)}")

    def check_output(self, out: Any, n: int, *, source: str = "model") -> np.ndarray:
        arr = np.asarray(out, dtype=np.float64)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.shape != (n,):
            raise TaskError(
                f"{source} returned shape {tuple(arr.shape)} for {n} rows; a binary model must "
                f"return P({self.classes[1]!r}) per row, shape ({n},)"
            )
        _check_probabilities(arr, source)
        return arr

    def point(self, out: np.ndarray) -> np.ndarray:
        return (np.asarray(out) >= 0.5).astype(np.int64)

    def row_loss(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        return row_log_loss(y, out)

    def row_error(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        return (self.point(out) != np.asarray(y)).astype(np.float64)

    def metrics(self, y: np.ndarray, out: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import f1_score, roc_auc_score

        y = np.asarray(y, np.int64)
        p = np.asarray(out, np.float64)
        hit = self.point(p)
        auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
        return {
            "auc": auc,
            "log_loss": float(self.row_loss(y, p).mean()),
            "brier": float(np.mean((p - y) ** 2)),
            "accuracy": float((hit == y).mean()),
            "f1": float(f1_score(y, hit, zero_division=0)),
            "positive_rate": float(y.mean()),
            "rows": float(len(y)),
        }


class MulticlassTask(_Classification):
    """k >= 3 classes (strings or ints); the model outputs (n, k) probabilities."""

    name = "multiclass"
    primary_metric = "log_loss"

    def __init__(self, classes: Sequence[Any]):
        super().__init__(classes)
        if len(self.classes) < 3:
            raise TaskError(
                f"a multiclass task declares >= 3 classes, got {list(self.classes)} "
                "(two classes: use task: binary)"
            )

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    def expected_shape(self) -> str:
        return f"(n, {len(self.classes)})"

    def check_output(self, out: Any, n: int, *, source: str = "model") -> np.ndarray:
        arr = np.asarray(out, dtype=np.float64)
        k = len(self.classes)
        if arr.shape != (n, k):
            raise TaskError(
                f"{source} returned shape {tuple(arr.shape)} for {n} rows; a multiclass model "
                f"must return one probability per declared class, shape ({n}, {k}) "
                f"in the order {list(self.classes)}"
            )
        _check_probabilities(arr, source)
        if n and np.max(np.abs(arr.sum(axis=1) - 1.0)) > PROBA_TOLERANCE:
            worst = float(np.max(np.abs(arr.sum(axis=1) - 1.0)))
            raise TaskError(
                f"{source} returned class probabilities whose rows do not sum to 1 "
                f"(off by up to {worst:.3g}): return probabilities (softmax), not logits"
            )
        return arr

    def point(self, out: np.ndarray) -> np.ndarray:
        return np.argmax(np.asarray(out), axis=1).astype(np.int64)

    def row_loss(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        p = np.asarray(out, np.float64)[np.arange(len(y)), np.asarray(y, np.int64)]
        return -np.log(clip_probabilities(p))

    def row_error(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        return (self.point(out) != np.asarray(y)).astype(np.float64)

    def metrics(self, y: np.ndarray, out: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import f1_score

        y = np.asarray(y, np.int64)
        p = np.asarray(out, np.float64)
        hit = self.point(p)
        onehot = np.eye(len(self.classes))[y]
        return {
            "log_loss": float(self.row_loss(y, p).mean()),
            "accuracy": float((hit == y).mean()),
            "macro_f1": float(
                f1_score(y, hit, average="macro", labels=range(len(self.classes)), zero_division=0)
            ),
            "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
            "rows": float(len(y)),
        }


class RegressionTask(Task):
    """A finite numeric label; the model outputs the predicted value per row."""

    name = "regression"
    primary_metric = "mse"
    request_loss_name = "abs_error"

    def request_loss(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        return self.row_error(y, out)

    def check_labels(self, labels: pd.Series | Sequence[Any]) -> LabelCheck:
        import pandas as pd

        values = pd.to_numeric(pd.Series(_values(labels), dtype=object), errors="coerce")
        num = values.to_numpy(np.float64)
        bad = ~np.isfinite(num)
        counts: dict[str, int] = {}
        raw = _values(labels)
        for i in np.flatnonzero(bad)[:10_000]:
            k = label_key(raw[i])
            shown = "<missing>" if k is None else k
            counts[shown] = counts.get(shown, 0) + 1
        reason = ""
        if counts:
            shown = ", ".join(f"{v} ({c} rows)" for v, c in sorted(counts.items())[:10])
            reason = f"regression label is not a finite number: {shown}"
        return LabelCheck(bad, reason, counts)

    def encode(self, labels: pd.Series | Sequence[Any] | np.ndarray) -> np.ndarray:
        check = self.check_labels(labels)
        if check.bad.any():
            raise TaskError(check.reason)
        import pandas as pd

        return pd.to_numeric(pd.Series(_values(labels), dtype=object)).to_numpy(np.float64)

    def check_trainable(self, y: np.ndarray) -> None:
        if len(y) and float(np.std(y)) == 0.0:
            raise TaskError(
                f"every training label is {float(y[0])!r}: a regression model needs labels "
                "that vary"
            )

    def check_output(self, out: Any, n: int, *, source: str = "model") -> np.ndarray:
        arr = np.asarray(out, dtype=np.float64)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.shape != (n,):
            raise TaskError(
                f"{source} returned shape {tuple(arr.shape)} for {n} rows; a regression model "
                f"must return one value per row, shape ({n},)"
            )
        if n and not np.isfinite(arr).all():
            raise TaskError(f"{source} returned non-finite predictions")
        return arr

    def point(self, out: np.ndarray) -> np.ndarray:
        return np.asarray(out, np.float64)

    def row_loss(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        return (np.asarray(out, np.float64) - np.asarray(y, np.float64)) ** 2

    def row_error(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(out, np.float64) - np.asarray(y, np.float64))

    def metrics(self, y: np.ndarray, out: np.ndarray) -> dict[str, float]:
        y = np.asarray(y, np.float64)
        p = np.asarray(out, np.float64)
        err = p - y
        var = float(np.var(y))
        return {
            "mae": float(np.mean(np.abs(err))),
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mse": float(np.mean(err**2)),
            "r2": float(1 - np.mean(err**2) / var) if var > 0 else float("nan"),
            "label_mean": float(y.mean()),
            "rows": float(len(y)),
        }


def _values(labels: pd.Series | Sequence[Any] | np.ndarray) -> list[Any]:
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(labels, pd.Series):
        return labels.tolist()
    return list(np.asarray(labels, dtype=object).ravel())


def _check_probabilities(arr: np.ndarray, source: str) -> None:
    if arr.size and (not np.isfinite(arr).all() or arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        raise TaskError(
            f"{source} returned values outside [0, 1] (min {lo:.3g}, max {hi:.3g}): "
            "a classifier must return probabilities, not logits or scores"
        )


def one_score_per_row(out: np.ndarray) -> np.ndarray:
    """One number per row of any task's output, as the prediction log and smoke tests keep
    it: ``(n,)`` as is; ``(n, 1)`` squeezed; ``(n, 2)`` class probabilities: P(second
    class) (binary); ``(n, k > 2)``: the predicted class's probability (multiclass)."""
    arr = np.asarray(out, dtype=np.float64)
    if arr.ndim <= 1:
        return arr.reshape(-1)
    if arr.shape[1] == 1:
        return arr[:, 0]
    if arr.shape[1] == 2:
        return arr[:, 1]
    return arr.max(axis=1)


TASKS: dict[str, type[Task]] = {
    "binary": BinaryTask,
    "multiclass": MulticlassTask,
    "regression": RegressionTask,
}


def make_task(name: str = "binary", classes: Iterable[Any] | None = None) -> Task:
    """The task named ``name`` (``binary`` | ``multiclass`` | ``regression``).

    ``classes``: the label values in output order; binary defaults to ``[0, 1]``,
    multiclass requires them, regression refuses them. Raises ``TaskError`` naming
    the field.
    """
    if name not in TASKS:
        raise TaskError(f"task: unknown task {name!r}; choose one of {', '.join(TASKS)}")
    cls_list = list(classes) if classes is not None else None
    if name == "regression":
        if cls_list:
            raise TaskError("classes: a regression task has no classes")
        return RegressionTask()
    if name == "multiclass":
        if not cls_list:
            raise TaskError("classes: a multiclass task must declare its classes, in order")
        return MulticlassTask(cls_list)
    return BinaryTask(cls_list) if cls_list else BinaryTask()


def task_from_meta(meta: Mapping[str, Any] | None) -> Task:
    """The task recorded with a model (``to_dict``); models from before tasks: binary."""
    meta = meta or {}
    return make_task(str(meta.get("task", "binary")), meta.get("classes") or None)
