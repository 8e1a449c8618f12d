"""Training tracked in MLflow: one MLflow run per Dagster run, everything logged.

Why a thin ``MlflowTracking`` ConfigurableResource instead of dagster-mlflow's
``mlflow_tracking``: dagster-mlflow imports mlflow at module import (about a
second, against our import-time budget for the code location, which every step
process pays), is a legacy function-style resource that starts an MLflow run
and mutates process-global state (tracking URI, env vars, an ``atexit`` hook)
for every step that requests it, even steps that only read. We keep its one
good idea, one MLflow run per Dagster run found by the ``dagster_run_id`` tag,
and import mlflow only inside the functions that need it.

The training fingerprint (data content, code version, parameters, library
versions) is the model's data version: ``train_and_track`` first looks it up
in the registry and returns the existing version when nothing changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from mlcicd_dagster import settings
from mlcicd_dagster.models import stats
from mlcicd_dagster.models.loading import RegisteredModel, log_and_register
from mlcicd_dagster.models.registry import FINGERPRINT_TAG, find_version_by_fingerprint
from mlcicd_dagster.models.trainers import TrainedModel, Trainer
from mlcicd_dagster.platform.cpu import openmp_threads

DAGSTER_RUN_TAG = "dagster_run_id"
"""Same tag name as dagster-mlflow, so its users find their runs the same way."""
CODE_VERSION_ENV = "MLCICD_CODE_VERSION"
LIBRARIES = ("scikit-learn", "torch", "numpy", "pandas", "mlflow", "skops")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
TRAINING_CODE_DIR = Path(__file__).resolve().parent
"""The code that decides what a model is: ``mlcicd_dagster/models``. Serving or
deployment changes must not retrain; pass pipeline code as ``extra_code_paths``."""


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = pkg_version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def code_version(extra_paths: Sequence[Path] = ()) -> str:
    """Hash of the training code's source (plus ``extra_paths``), or ``$MLCICD_CODE_VERSION``.

    A content hash, not a git commit: it is right for uncommitted changes and
    for an installed wheel alike.
    """
    env = settings.get(CODE_VERSION_ENV)
    if env:
        return env
    h = hashlib.sha256()
    files: list[Path] = sorted(TRAINING_CODE_DIR.rglob("*.py"))
    for p in extra_paths:
        p = Path(p)
        files += sorted(p.rglob("*")) if p.is_dir() else [p]
    for f in files:
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(f.anchor)).encode())
            h.update(f.read_bytes())
    return "src-" + h.hexdigest()[:16]


def git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PACKAGE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def data_fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of a frame: column names, dtypes and every value, in order."""
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def training_fingerprint(
    train: pd.DataFrame, *, params: Mapping[str, Any], code: str | None = None
) -> str:
    """The model's data version: (data content, code version, params, library versions)."""
    payload = {
        "data": data_fingerprint(train),
        "code": code or code_version(),
        "params": json.loads(json.dumps(dict(params), sort_keys=True, default=str)),
        "libraries": library_versions(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p, np.float64)
    hit = p >= threshold
    tp = int((hit & (y == 1)).sum())
    fp = int((hit & (y == 0)).sum())
    fn = int((~hit & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "auc": stats.auc(y, p),
        "log_loss": float(stats.row_log_loss(y, p).mean()),
        "brier": float(np.mean((p - y) ** 2)),
        "accuracy": float((hit == (y == 1)).mean()),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "positive_rate": float(y.mean()),
        "rows": float(len(y)),
    }


def log_curves(y: np.ndarray, p: np.ndarray, prefix: str, threshold: float = 0.5) -> list[str]:
    """ROC, PR, calibration and confusion-matrix figures as artifacts of the active run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import auc as sk_auc
    from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

    y = np.asarray(y).astype(np.int64)
    names = []
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    fpr, tpr, _ = roc_curve(y, p)
    ax = axes[0, 0]
    ax.plot(fpr, tpr, label=f"AUC {sk_auc(fpr, tpr):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
    ax.legend()
    prec, rec, _ = precision_recall_curve(y, p)
    ax = axes[0, 1]
    ax.plot(rec, prec)
    ax.axhline(y.mean(), ls="--", color="grey")
    ax.set(title="precision-recall", xlabel="recall", ylabel="precision")
    frac, mean_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    ax = axes[1, 0]
    ax.plot(mean_pred, frac, "o-")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(title="calibration", xlabel="mean predicted", ylabel="observed rate")
    cm = confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1])
    ax = axes[1, 1]
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set(
        title=f"confusion matrix (p >= {threshold})",
        xlabel="predicted",
        ylabel="actual",
        xticks=[0, 1],
        yticks=[0, 1],
    )
    fig.tight_layout()
    name = f"plots/{prefix}_curves.png"
    mlflow.log_figure(fig, name)
    plt.close(fig)
    names.append(name)
    curves = {
        "roc": {
            "fpr": fpr[:: max(1, len(fpr) // 200)].tolist(),
            "tpr": tpr[:: max(1, len(tpr) // 200)].tolist(),
        },
        "calibration": {"mean_predicted": mean_pred.tolist(), "observed": frac.tolist()},
        "confusion_matrix": cm.tolist(),
    }
    mlflow.log_dict(curves, f"plots/{prefix}_curves.json")
    names.append(f"plots/{prefix}_curves.json")
    return names


def log_task_plot(task: Any, y: np.ndarray, out: np.ndarray, prefix: str) -> str:
    """Multiclass: the confusion matrix; regression: predicted against actual."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    fig, ax = plt.subplots(figsize=(6, 5.5))
    if task.name == "multiclass":
        from sklearn.metrics import confusion_matrix

        k = len(task.classes)
        cm = confusion_matrix(y, task.point(out), labels=list(range(k)))
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
        ticks = [str(c) for c in task.classes]
        ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="actual")
        ax.set_xticklabels(ticks, rotation=90)
        ax.set_yticklabels(ticks)
        ax.set_title("confusion matrix")
        mlflow.log_dict({"classes": ticks, "confusion_matrix": cm.tolist()}, f"plots/{prefix}.json")
    else:
        ax.scatter(y, out, s=6, alpha=0.5)
        lo, hi = float(min(y.min(), out.min())), float(max(y.max(), out.max()))
        ax.plot([lo, hi], [lo, hi], "--", color="grey")
        ax.set(title="predicted vs actual", xlabel="actual", ylabel="predicted")
    fig.tight_layout()
    name = f"plots/{prefix}_{task.name}.png"
    mlflow.log_figure(fig, name)
    plt.close(fig)
    return name


@dataclass
class TrackedModel:
    """The outcome of ``train_and_track``: a registered version, new or reused."""

    registered: RegisteredModel
    reused: bool
    fingerprint: str
    metrics: dict[str, float] = field(default_factory=dict)
    trained: TrainedModel | None = None
    run_url: str | None = None


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A link to the run in the MLflow UI: ``$MLCICD_MLFLOW_UI_URL`` when set (``mlcicd ui``
    sets it to the MLflow UI it starts; ``deploy/`` to where browsers reach the tracking
    server), else a tracking server's own URL, else the local default of ``mlcicd ui``."""
    base = settings.get("MLCICD_MLFLOW_UI_URL") or (
        tracking_uri if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    )
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def start_run_for_dagster_run(
    tracking_uri: str, experiment_name: str, dagster_run_id: str | None, **tags: str
) -> Any:
    """Start (or resume) the one MLflow run of this Dagster run; returns the active run."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    from mlcicd_dagster.models.registry import ensure_experiment

    exp_id = ensure_experiment(tracking_uri, experiment_name)
    run_id = None
    if dagster_run_id:
        found = mlflow.search_runs(
            experiment_ids=[exp_id],
            filter_string=f"tags.{DAGSTER_RUN_TAG} = '{dagster_run_id}'",
            output_format="list",
            max_results=1,
        )
        run_id = found[0].info.run_id if found else None
    all_tags = {k: v for k, v in tags.items() if v is not None}
    if dagster_run_id:
        all_tags[DAGSTER_RUN_TAG] = dagster_run_id
    if run_id:
        return mlflow.start_run(run_id=run_id)
    return mlflow.start_run(experiment_id=exp_id, tags=all_tags)


def train_and_track(
    trainer: Trainer,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    label: str,
    tracking_uri: str,
    model_name: str,
    features: Sequence[str] | None = None,
    dagster_run_id: str | None = None,
    experiment_name: str | None = None,
    seed: int = 0,
    extra_tags: Mapping[str, str] | None = None,
    extra_code_paths: Sequence[Path] = (),
    force: bool = False,
    threads: int | None = None,
    trusted_types: Sequence[str] = (),
) -> TrackedModel:
    """Train (unless the fingerprint already has a version), evaluate, log, register.

    ``threads`` caps the CPU threads of the fit and the holdout scoring (None: all).

    Logged: params, holdout metrics, curves (ROC, PR, calibration, confusion
    matrix), signature and input example, the data and training fingerprints,
    the code version and git commit, library versions, the Dagster run id.
    """
    import mlflow

    if label not in train.columns or label not in holdout.columns:
        raise ValueError(f"label column {label!r} missing from train or holdout")
    feats = list(features) if features is not None else [c for c in train.columns if c != label]
    missing = [c for c in feats if c not in train.columns or c not in holdout.columns]
    if missing:
        raise ValueError(f"feature column(s) missing: {', '.join(missing)}")
    code = code_version(extra_code_paths)
    params = {**trainer.params(), "seed": seed, "features": feats, "label": label}
    fp = training_fingerprint(train[[*feats, label]], params=params, code=code)
    if not force:
        existing = find_version_by_fingerprint(tracking_uri, model_name, fp)
        if existing is not None:
            from mlcicd_dagster.models.registry import client

            mv = client(tracking_uri).get_model_version(model_name, existing)
            return TrackedModel(
                registered=RegisteredModel(
                    model_name,
                    existing,
                    mv.run_id,
                    f"models:/{model_name}/{existing}",
                    mv.tags.get("mlcicd.flavor", ""),
                ),
                reused=True,
                fingerprint=fp,
            )
    task = trainer.task
    trained = trainer.fit(train[feats], train[label], seed=seed, threads=threads)
    y_h = task.encode(holdout[label])
    with openmp_threads(threads):
        p_h = trained.predictor.predict(holdout[feats])
    scores = evaluate(y_h, p_h) if task.name == "binary" else task.metrics(y_h, p_h)
    metrics = {f"holdout_{k}": v for k, v in scores.items()}
    metrics["train_seconds"] = trained.train_seconds
    for k, v in trained.info.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            metrics[f"train_{k}"] = float(v)
    exp_name = experiment_name or model_name
    with start_run_for_dagster_run(
        tracking_uri, exp_name, dagster_run_id, **dict(extra_tags or {})
    ) as run:
        mlflow.set_tags(
            {
                "mlcicd.fingerprint": fp,
                "mlcicd.data_fingerprint": data_fingerprint(train[[*feats, label]]),
                "mlcicd.code_version": code,
                "mlcicd.git_commit": git_commit() or "unknown",
                "mlcicd.trainer": trainer.name,
                "mlcicd.task": task.name,
                **{f"lib.{k}": v for k, v in library_versions().items()},
            }
        )
        mlflow.log_params(
            {
                k: json.dumps(v) if not isinstance(v, str) else v
                for k, v in params.items()
                if k != "features"
            }
        )
        mlflow.log_dict(
            {"features": feats, "label": label, **task.to_dict(), "text": trained.string_features},
            "features.json",
        )
        mlflow.log_metrics(metrics)
        curve = trained.info.get("val_curve")
        if isinstance(curve, list):
            for step, v in enumerate(curve):
                mlflow.log_metric("val_log_loss", float(v), step=step + 1)
        mlflow.log_dict(
            {k: v for k, v in trained.info.items() if k != "val_curve"}, "train_info.json"
        )
        if task.name == "binary":
            log_curves(y_h, p_h, "holdout")
        else:
            log_task_plot(task, y_h, p_h, "holdout")
        reg = log_and_register(
            trained.model,
            model_name=model_name,
            X_example=train[feats].head(8),
            tracking_uri=tracking_uri,
            feature_names=feats,
            run_id=run.info.run_id,
            task=task,
            string_features=trained.string_features,
            allow_missing=trained.allow_missing,
            trusted_types=trusted_types,
            version_tags={
                FINGERPRINT_TAG: fp,
                "mlcicd.flavor": "torch" if trainer.name.startswith("torch") else "sklearn",
                "mlcicd.code_version": code,
                "mlcicd.task": task.name,
                DAGSTER_RUN_TAG: dagster_run_id or "",
            },
        )
        url = run_link(tracking_uri, run.info.experiment_id, run.info.run_id)
    trained.predictor.version = reg.version
    return TrackedModel(
        registered=reg,
        reused=False,
        fingerprint=fp,
        metrics=metrics,
        trained=trained,
        run_url=url,
    )


class MlflowTracking(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where models are tracked. ``tracking_uri`` empty: ``MLFLOW_TRACKING_URI`` if set,
    else the embedded store of ``MLCICD_HOME``."""

    tracking_uri: str = ""
    experiment_name: str = ""

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        from mlcicd_dagster.platform.home import Home

        home = Home.from_env()
        home.mlflow_dir.mkdir(parents=True, exist_ok=True)
        return home.tracking_uri

    def train_and_track(
        self, trainer: Trainer, train: pd.DataFrame, holdout: pd.DataFrame, **kwargs: Any
    ) -> TrackedModel:
        if self.experiment_name and "experiment_name" not in kwargs:
            kwargs["experiment_name"] = self.experiment_name
        return train_and_track(trainer, train, holdout, tracking_uri=self.uri(), **kwargs)
