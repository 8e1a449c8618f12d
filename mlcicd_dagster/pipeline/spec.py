"""What one shipped pipeline declares; the library reads nothing else about a dataset."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RolloutSpec:
    """How a gated model reaches traffic.

    The first model ever goes blue-green (there is nothing to compare a canary
    with); later ones use ``strategy``.
    """

    strategy: str = "canary"  # blue_green | canary | shadow
    canary_steps: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)
    shadow_fraction: float = 0.2
    max_duration_s: float = 600.0
    poll_interval_s: float = 2.0
    # the canary's (and shadow's) sequential analysis: P(rolling back a model that is equal
    # or better), all metrics together, and P(promoting one worse by a margin or more)
    alpha_rollback: float = 0.05
    alpha_promote: float = 0.05


TASKS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class PipelineSpec:
    """The resolved, typed config of one pipeline (absolute paths, defaults applied).

    Users do not write this: ``mlcicd_dagster.MLPipeline`` (``assets/<name>/defs.yaml``)
    validates the YAML and builds it; every library step takes it.
    """

    dataset: str  # asset key prefix and landing/lake folder name
    model_name: str  # registered MLflow model name
    label: str
    id_column: str | None
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    suite_path: Path  # Great Expectations suite (YAML) with severities
    gates_path: Path  # model gate thresholds, margins, slices
    behavioral_path: Path | None  # behavioral test cases (None: the gate has none)
    golden_path: Path  # trusted labelled rows, never taken from landed data
    sample_path: Path | None = None  # rows `mlcicd ci` runs the pipeline on (a PR check)
    holdout_fraction: float = 0.2
    trainer: str = "sklearn"  # sklearn | torch
    trainer_params: dict = field(default_factory=dict)
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    monitoring_window_minutes: int = 60
    # First monitoring window the partitions list ("%Y-%m-%d-%H:%M", UTC); None: the start
    # of the UTC day ``monitoring_history_days`` ago (older windows are not listed).
    monitoring_start: str | None = None
    monitoring_history_days: int = 7
    task: str = "binary"  # binary | multiclass | regression
    model_factory: str | None = None  # "package.module:function" (None: the task's default)
    trusted_types: tuple[str, ...] = ()  # skops types this pipeline's models may load
    owners: tuple[str, ...] = ()  # Dagster asset owners (emails or "team:name")
    description: str | None = None
    classes: tuple[Any, ...] = ()
    """Label values in output order: binary defaults to (0, 1); multiclass requires them."""
    model_params: dict = field(default_factory=dict)
    """Keyword arguments for ``model_factory`` (``trainer_params`` go to the trainer)."""

    #: After a candidate fails on the golden set: find the new batch to blame by
    #: retraining on subsets, then ``revoke`` it (default), only ``report`` it, or ``off``.
    data_bisect: str = "revoke"

    def __post_init__(self) -> None:
        """Refuse an invalid pipeline when the code location loads, naming the field."""
        if self.task not in TASKS:
            raise ValueError(
                f"pipeline {self.dataset!r}: task: unknown task {self.task!r}; "
                f"choose one of {', '.join(TASKS)}"
            )
        keys = class_keys(self.task, list(self.classes) or None)
        if isinstance(keys, str):
            raise ValueError(f"pipeline {self.dataset!r}: classes: {keys}")
        if self.trainer not in ("sklearn", "torch"):
            raise ValueError(
                f"pipeline {self.dataset!r}: trainer: unknown trainer {self.trainer!r}; "
                "choose sklearn or torch"
            )
        if not self.label:
            raise ValueError(f"pipeline {self.dataset!r}: label: required")
        if self.label in self.features:
            raise ValueError(f"pipeline {self.dataset!r}: label: {self.label!r} is also a feature")
        bad = [t for t in self.trusted_types if not isinstance(t, str) or "." not in t]
        if bad:
            raise ValueError(
                f"pipeline {self.dataset!r}: trusted_types: expected dotted type names, got {bad}"
            )

    @property
    def task_type(self) -> Any:
        """The ``models.tasks.Task`` of this pipeline."""
        from mlcicd_dagster.models.tasks import make_task

        return make_task(self.task, self.classes or None)

    def make_trainer(self) -> Any:
        """The trainer this pipeline declares (built-in per task, or its factory)."""
        from mlcicd_dagster.models.trainers import make_trainer

        return make_trainer(
            self.trainer,
            self.trainer_params,
            task=self.task_type,
            factory=self.model_factory,
            model_params=self.model_params,
        )

    def drift_columns(self) -> dict[str, Any]:
        """``ReferenceProfile.from_frame`` keywords: a regression label drifts as a number,
        a class label as a category."""
        if self.task == "regression":
            return {
                "numeric": (*self.numeric_features, self.label),
                "categorical": self.categorical_features,
                "label": None,
            }
        return {
            "numeric": self.numeric_features,
            "categorical": self.categorical_features,
            "label": self.label,
        }

    def label_summary(self, labels: Any) -> dict[str, Any]:
        """What the training set's metadata says of its labels, per task."""
        if self.task == "regression":
            values = labels.astype("float64")
            return {"label_mean": round(float(values.mean()), 4)}
        task = self.task_type
        y = task.encode(labels)
        if self.task == "binary":
            return {"positive_rate": round(float(y.mean()), 4)}
        counts = {str(c): int((y == i).sum()) for i, c in enumerate(task.classes)}
        return {"class_counts": counts}

    @property
    def features(self) -> list[str]:
        return [*self.numeric_features, *self.categorical_features]

    def op_tags(self, step: str) -> dict:
        """``dagster-k8s/config`` tags of a step, from the one compute profile
        (``platform.k8s``): the model step of a torch trainer asks for GPUs, every other
        step for CPU and memory. Ignored by the local executor."""
        from mlcicd_dagster.platform.k8s import op_tags_for

        return op_tags_for("gpu" if step == "model" and self.trainer == "torch" else "cpu")

    @property
    def partitions_name(self) -> str:
        """Name of the dynamic partitions (one per landed file)."""
        return f"{self.dataset}_batches"

    def key(self, name: str) -> list[str]:
        return [self.dataset, name]


def label_key(value: Any) -> str | None:
    """A label as the text it is compared by (``models.tasks.label_key`` for plain Python
    values, without numpy): ``3``, ``3.0`` and ``"3"`` are one class; missing is None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value).strip()


def class_keys(task: str, classes: list[Any] | None) -> list[str | None] | str:
    """The class keys in output order, or why ``classes`` does not fit ``task`` (the rules
    of ``models.tasks.make_task``, checked here because the code location loads this in
    every step process and ``models.tasks`` needs numpy)."""
    if task == "regression":
        return "a regression task has no classes" if classes else []
    if task == "multiclass" and not classes:
        return "a multiclass task must declare its classes, in order"
    keys = [label_key(c) for c in (classes or [0, 1])]
    if any(k is None or k == "" for k in keys):
        return f"classes must not be missing or empty, got {classes}"
    if len(set(keys)) != len(keys):
        return f"classes must be distinct, got {classes}"
    if task == "binary" and len(keys) != 2:
        return f"a binary task has exactly 2 classes, got {classes}"
    return keys
