"""Save a trained model to MLflow and load it back as a fast ``Predictor``.

The save and load halves live together because they are one contract: the
format written here is the only format read here.

* scikit-learn models are written with skops. The list of types we trust when
  loading is kept *in this code* (``TRUSTED_SKLEARN_TYPES`` plus what a caller
  passes explicitly), never read from the model artifact: a crafted artifact
  cannot whitelist its own payload, and a model that needs a type not on the
  list fails with an error naming it instead of silently falling back to pickle.
* torch models are written as ``torch.export`` programs (MLflow's ``pt2``
  format): a traced graph that loads without the training code and without
  pickle (MLflow checks the archive is pickle-free before loading it).
  ``torch.jit.script`` is deprecated in this torch.

The predict path skips pyfunc: the frame is turned into one contiguous numpy
array in feature order and handed straight to the estimator / graph. This is
what the model server calls on every micro-batch.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.models.predictor import Predictor
from mlcicd_dagster.models.tasks import BinaryTask, Task, TaskError, label_key, task_from_meta
from mlcicd_dagster.models.trust import (  # noqa: F401 - part of this module's API
    declare_trusted_types,
    declared_trusted_types,
    model_name_of,
)

MODEL_ARTIFACT_NAME = "model"
"""Name of the model inside its MLflow run (``runs:/<id>/model``)."""

METADATA_KEY = "mlcicd"
"""Key of our block in the MLmodel ``metadata``: feature names and flavor."""

TRUSTED_SKLEARN_TYPES: tuple[str, ...] = (
    # The only non-default type in a fitted HistGradientBoosting model; skops
    # trusts sklearn estimators, numpy arrays and builtins by itself.
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)

TORCH_INPUT_DTYPE = np.float64
"""dtype of the logged torch graph's input (it casts to float32 inside). Versions logged
before it took float32; the loader reads the dtype from the signature."""

TORCH_EXAMPLE_ROWS = 8
"""Rows of the input example used to trace a torch model. More than one, so that
``torch.export`` keeps the batch dimension dynamic instead of specialising it."""


class ModelLoadError(RuntimeError):
    """A registered model could not be turned into a ``Predictor`` (reason in message)."""


@dataclass(frozen=True)
class RegisteredModel:
    """One registered model version, as returned by ``log_and_register``."""

    name: str
    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>
    flavor: str  # "sklearn" | "torch"


# ---------------------------------------------------------------------------
# frames -> matrices
# ---------------------------------------------------------------------------
def to_matrix(
    features: pd.DataFrame | np.ndarray,
    feature_names: Sequence[str],
    dtype: Any = np.float64,
    *,
    allow_missing: bool = False,
) -> np.ndarray:
    """The rows of ``features`` as a C-contiguous array in ``feature_names`` order.

    Raises ``ValueError`` naming missing, non-numeric or non-finite columns, so
    that a server can turn it into a 4xx answer. ``allow_missing``: NaN passes (the
    model handles it), infinities do not.
    """
    if isinstance(features, np.ndarray):
        if features.ndim != 2 or features.shape[1] != len(feature_names):
            raise ValueError(
                f"expected a 2-d array with {len(feature_names)} columns "
                f"({', '.join(feature_names)}), got shape {features.shape}"
            )
        matrix = np.ascontiguousarray(features, dtype=dtype)
        cols: Sequence[str] = feature_names
    else:
        if not isinstance(features, pd.DataFrame):
            raise ValueError(f"expected a pandas DataFrame, got {type(features).__name__}")
        missing = [c for c in feature_names if c not in features.columns]
        if missing:
            raise ValueError(f"missing feature column(s): {', '.join(map(str, missing))}")
        frame = features[list(feature_names)]
        try:
            matrix = np.ascontiguousarray(frame.to_numpy(dtype=dtype))
        except (TypeError, ValueError):
            bad = [c for c in feature_names if not _is_numeric_column(frame[c])]
            raise ValueError(
                f"non-numeric value(s) in feature column(s): {', '.join(map(str, bad))}"
            ) from None
        cols = feature_names
    bad = np.isinf(matrix) if allow_missing else ~np.isfinite(matrix)
    if matrix.size and bad.any():
        bad_cols = [str(cols[int(i)]) for i in np.flatnonzero(bad.any(axis=0))]
        raise ValueError(
            f"missing or infinite value(s) in feature column(s): {', '.join(bad_cols)}"
        )
    return matrix


def _is_numeric_column(col: pd.Series) -> bool:
    try:
        col.to_numpy(dtype=np.float64)
        return True
    except (TypeError, ValueError):
        return False


def to_frame(
    features: pd.DataFrame | np.ndarray,
    feature_names: Sequence[str],
    string_features: Sequence[str] = (),
    *,
    allow_missing: bool = False,
) -> pd.DataFrame:
    """The rows of ``features`` as a frame for a model that takes strings or missing values.

    Numeric columns become float64 (a value that is not a number is an error naming
    the column); ``string_features`` become text (missing stays missing: the model
    handles it). Missing numbers are allowed only with ``allow_missing``.
    """
    if isinstance(features, np.ndarray):
        if features.ndim != 2 or features.shape[1] != len(feature_names):
            raise ValueError(
                f"expected a 2-d array with {len(feature_names)} columns "
                f"({', '.join(feature_names)}), got shape {features.shape}"
            )
        features = pd.DataFrame(features, columns=list(feature_names))
    if not isinstance(features, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(features).__name__}")
    missing = [c for c in feature_names if c not in features.columns]
    if missing:
        raise ValueError(f"missing feature column(s): {', '.join(map(str, missing))}")
    strings = set(string_features)
    out: dict[str, Any] = {}
    bad_type, bad_missing = [], []
    for name in feature_names:
        col = features[name]
        if name in strings:
            present = col.notna().to_numpy()
            values = np.full(len(col), np.nan, dtype=object)
            values[present] = col[present].map(_category_text).to_numpy(dtype=object)
            out[name] = values
            continue
        num = pd.to_numeric(col, errors="coerce")
        arr = num.to_numpy(np.float64)
        if (col.notna().to_numpy() & np.isnan(arr)).any():
            bad_type.append(str(name))
        elif np.isinf(arr).any() or (not allow_missing and np.isnan(arr).any()):
            bad_missing.append(str(name))
        out[name] = arr
    if bad_type:
        raise ValueError(f"non-numeric value(s) in feature column(s): {', '.join(bad_type)}")
    if bad_missing:
        raise ValueError(
            f"missing or infinite value(s) in feature column(s): {', '.join(bad_missing)}"
        )
    return pd.DataFrame(out, columns=list(feature_names))


def _category_text(value: Any) -> str:
    """A categorical value as the text the model was trained on (``3.0`` is ``"3"``)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def string_columns(frame: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """The columns of ``names`` whose values are text (object/string/category dtype)."""
    return [
        str(n)
        for n in names
        if not pd.api.types.is_numeric_dtype(frame[n]) and not pd.api.types.is_bool_dtype(frame[n])
    ]


def frame_for_training(
    frame: pd.DataFrame, names: Sequence[str], string_features: Sequence[str]
) -> pd.DataFrame:
    """Training features exactly as ``to_frame`` will present them at prediction time."""
    return to_frame(frame, names, string_features, allow_missing=True)


# ---------------------------------------------------------------------------
# predictors
# ---------------------------------------------------------------------------
SINGLE_THREAD_MAX_ROWS = 2048
"""Micro-batches up to this size are scored on one OpenMP thread. Measured on a
busy 2-core machine: HistGradientBoosting's thread team made single-row p99
~2 s (threads waiting for descheduled siblings); one thread gave ~13 ms."""

_CONTROLLER: Any = None


def _openmp_single_thread() -> Any:
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="openmp")


class _TaskPredictor:
    """What both flavors share: the task, ``predict`` checked against it, and
    ``predict_proba`` = P(positive) for binary tasks."""

    flavor = ""
    task: Task
    feature_names: list[str]
    string_features: list[str]
    allow_missing: bool

    def _raw(self, features: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def predict(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The task's output for each row (``models.tasks``), refused if it does not fit."""
        raw, n = self._raw(features)
        if n == 0:
            return np.empty((0, self.task.n_outputs) if self.task.n_outputs > 1 else 0)
        return self.task.check_output(raw, n, source=f"{self.flavor} model")

    def predict_proba(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """P(positive class) per row; binary tasks only (``predict`` serves every task)."""
        if self.task.name != "binary":
            raise TaskError(
                f"predict_proba is P(positive) of a binary model; this model's task is "
                f"{self.task.name}: use predict()"
            )
        return self.predict(features)

    @property
    def takes_frame(self) -> bool:
        """True when requests must reach the model as a frame (text features)."""
        return bool(self.string_features)


class SklearnPredictor(_TaskPredictor):
    """A fitted scikit-learn estimator (or Pipeline) behind the ``Predictor`` interface."""

    flavor = "sklearn"

    def __init__(
        self,
        estimator: Any,
        feature_names: Sequence[str],
        version: str = "local",
        *,
        task: Task | None = None,
        string_features: Sequence[str] = (),
        allow_missing: bool = False,
        trusted_types: Sequence[str] = (),
    ):
        self.estimator = estimator
        self.feature_names = list(feature_names)
        self.version = str(version)
        self.task = task or BinaryTask()
        self.string_features = list(string_features)
        self.allow_missing = bool(allow_missing)
        self.trusted_types = list(trusted_types)
        if self.task.name == "regression":
            if not hasattr(estimator, "predict"):
                raise ModelLoadError(f"{type(estimator).__name__} has no predict()")
            self._column: int | None = None
        else:
            if not hasattr(estimator, "predict_proba"):
                raise ModelLoadError(
                    f"a {self.task.name} model must give class probabilities; "
                    f"{type(estimator).__name__} has no predict_proba()"
                )
            classes = [label_key(c) for c in getattr(estimator, "classes_", [0, 1])]
            want = [str(i) for i in range(len(self.task.classes))]
            if classes != want:
                raise ModelLoadError(
                    f"the estimator's classes_ {classes} are not the task's encoded classes "
                    f"{want} ({list(self.task.classes)} in order): a {self.task.name} model "
                    "must be fitted on the encoded labels with every class present"
                )
            self._column = 1 if self.task.name == "binary" else None
        # Estimators fitted on a DataFrame check column names; give them one.
        self._wants_frame = hasattr(estimator, "feature_names_in_")

    def _raw(self, features: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, int]:
        x: Any
        if self.takes_frame:
            x = to_frame(
                features, self.feature_names, self.string_features, allow_missing=self.allow_missing
            )
        else:
            matrix = to_matrix(
                features, self.feature_names, np.float64, allow_missing=self.allow_missing
            )
            x = pd.DataFrame(matrix, columns=self.feature_names) if self._wants_frame else matrix
        n = len(x)
        if n == 0:
            return np.empty(0), 0
        regression = self.task.name == "regression"
        method = self.estimator.predict if regression else self.estimator.predict_proba
        if n <= SINGLE_THREAD_MAX_ROWS:
            with _openmp_single_thread():
                out = method(x)
        else:
            out = method(x)
        out = np.asarray(out, dtype=np.float64)
        if self._column is not None:
            if out.ndim != 2 or out.shape[1] != 2:
                raise TaskError(f"binary estimator returned shape {out.shape} from predict_proba")
            out = out[:, self._column]
        return out, n


class TorchPredictor(_TaskPredictor):
    """A torch module mapping float32 ``(n, d)`` to the task's output (see ``tasks``)."""

    flavor = "torch"

    def __init__(
        self,
        module: Any,
        feature_names: Sequence[str],
        version: str = "local",
        *,
        task: Task | None = None,
        device: str = "cpu",
        input_dtype: Any = np.float32,
    ):
        import torch

        self.module = module
        self.feature_names = list(feature_names)
        self.version = str(version)
        self.task = task or BinaryTask()
        self.string_features = []
        self.allow_missing = False
        self.trusted_types: list[str] = []
        self.device = device
        self.input_dtype = np.dtype(input_dtype)
        self._torch = torch
        if hasattr(module, "eval"):
            try:
                module.eval()
            except (NotImplementedError, RuntimeError):
                pass  # exported GraphModules refuse train/eval switches; they are fixed graphs

    def _raw(self, features: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, int]:
        matrix = to_matrix(features, self.feature_names, self.input_dtype)
        n = matrix.shape[0]
        if n == 0:
            return np.empty(0), 0
        if n == 1:
            # torch.export specialises size-1 dims; a duplicated row keeps the graph dynamic.
            matrix = np.repeat(matrix, 2, axis=0)
        x = self._torch.from_numpy(matrix)
        if self.device != "cpu":
            x = x.to(self.device)
        with self._torch.inference_mode():
            out = self.module(x)
        arr = out.detach().to("cpu").double().numpy()
        # the whole output is checked against the task first: never flatten (n, k) to (n*k,)
        arr = self.task.check_output(arr, len(matrix), source="torch model")
        return arr[:n], n


# ---------------------------------------------------------------------------
# logging and registration
# ---------------------------------------------------------------------------
def detect_flavor(model: Any) -> str:
    """``"torch"`` for a ``torch.nn.Module``, ``"sklearn"`` for a scikit-learn estimator."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    if hasattr(model, "predict_proba") or (hasattr(model, "predict") and hasattr(model, "fit")):
        return "sklearn"
    raise TypeError(
        f"cannot log {type(model).__name__}: expected a scikit-learn estimator or Pipeline "
        "or a torch.nn.Module"
    )


def check_skops_types(model: Any, trusted_types: Iterable[str] = ()) -> list[str]:
    """Return the trusted-type list a model needs; raise if it needs more than we trust."""
    import skops.io

    trusted = sorted(set(TRUSTED_SKLEARN_TYPES) | set(trusted_types))
    needed = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    untrusted = sorted(set(needed) - set(trusted))
    if untrusted:
        raise ModelLoadError(
            "model contains types that are not on the trusted list: "
            f"{', '.join(untrusted)}; if you trust them, declare them in the pipeline's "
            "`trusted_types` (reviewed with the pipeline; we never fall back to pickle)"
        )
    return trusted


def _pip_requirements(flavor: str) -> list[str]:
    """Pinned requirements, given explicitly: MLflow's inference spawns a slow subprocess."""
    from importlib.metadata import version

    pkgs = ["mlflow", "numpy", "pandas"]
    pkgs += ["scikit-learn", "skops", "scipy"] if flavor == "sklearn" else ["torch"]
    return [f"{p}=={version(p)}" for p in pkgs]


def log_model_to_run(
    model: Any,
    *,
    X_example: pd.DataFrame,
    feature_names: Sequence[str] | None = None,
    registered_model_name: str | None = None,
    trusted_types: Iterable[str] = (),
    extra_metadata: Mapping[str, Any] | None = None,
    task: Task | None = None,
    string_features: Sequence[str] = (),
    allow_missing: bool = False,
) -> Any:
    """Log ``model`` into the *active* MLflow run; returns MLflow's ``ModelInfo``.

    The model is first scored on the example through the same ``Predictor`` that
    loading builds: a model whose output does not fit ``task`` is refused here
    (``TaskError``), before anything is registered.
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    task = task or BinaryTask()
    flavor = detect_flavor(model)
    names = list(feature_names) if feature_names is not None else [str(c) for c in X_example]
    raw_example = X_example[names].head(TORCH_EXAMPLE_ROWS)
    if len(raw_example) < 2:
        raise ValueError("X_example needs at least 2 rows (used to trace and document the model)")
    metadata = {
        METADATA_KEY: {
            "feature_names": names,
            "flavor": flavor,
            **task.to_dict(),
            "string_features": list(string_features),
            "allow_missing": bool(allow_missing),
            **(extra_metadata or {}),
        }
    }
    if flavor == "sklearn":
        trusted = check_skops_types(model, trusted_types)
        from mlflow.models import infer_signature

        predictor = SklearnPredictor(
            model,
            names,
            task=task,
            string_features=string_features,
            allow_missing=allow_missing,
        )
        example = to_frame(raw_example, names, string_features, allow_missing=True)
        out = predictor.predict(example)  # refuses an output that does not fit the task
        pyfunc_out = model.predict(example) if task.name == "regression" else None
        if pyfunc_out is None:
            x = example if predictor._wants_frame else example.to_numpy(np.float64)
            pyfunc_out = model.predict_proba(x)
        del out
        # The signature describes the data as the data gate passes it: integer columns stay
        # integers, text stays text (MLflow refuses int64 -> double as unsafe).
        signature = infer_signature(raw_example, pyfunc_out)
        with warnings.catch_warnings():
            # MLflow scores the example frame through pyfunc; models fitted on arrays warn.
            warnings.filterwarnings("ignore", message="X has feature names")
            return mlflow.sklearn.log_model(
                model,
                name=MODEL_ARTIFACT_NAME,
                serialization_format="skops",
                skops_trusted_types=trusted,
                signature=signature,
                input_example=raw_example,
                pyfunc_predict_fn="predict" if task.name == "regression" else "predict_proba",
                metadata=metadata,
                pip_requirements=_pip_requirements("sklearn"),
                registered_model_name=registered_model_name,
            )
    import mlflow.pytorch

    if string_features:
        raise TaskError(
            f"a torch model takes numbers only; feature(s) {', '.join(string_features)} hold "
            "text: encode them first or use a scikit-learn model"
        )
    module = model.to("cpu").eval()
    # The logged graph takes float64 (what a landed frame of numbers is as a matrix) and
    # casts to float32 first, so that ``mlflow.pyfunc.load_model(uri).predict(raw_frame)``
    # takes the data gate's dtypes; the scores are the float32 module's, bit for bit.
    x = np.ascontiguousarray(raw_example.to_numpy(np.float64))
    shape: tuple[int, ...] = (-1, task.n_outputs) if task.n_outputs > 1 else (-1,)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(TORCH_INPUT_DTYPE), (-1, len(names)))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), shape)]),
    )
    # fail here, clearly, if the module does not take (n, d) or its output misfits the task
    TorchPredictor(module, names, task=task).predict(raw_example)
    return mlflow.pytorch.log_model(
        _float64_input(module),
        name=MODEL_ARTIFACT_NAME,
        serialization_format="pt2",
        input_example=x,
        signature=signature,
        metadata=metadata,
        pip_requirements=_pip_requirements("torch"),
        registered_model_name=registered_model_name,
    )


def _float64_input(module: Any) -> Any:
    """``module`` behind a cast: takes float64 ``(n, d)``, feeds it float32."""
    import torch

    class Float64Input(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            return self.inner(x.to(torch.float32))

    return Float64Input(module).eval()


def _fitted_on_frame(model: Any) -> bool:
    return hasattr(model, "feature_names_in_")


def log_and_register(
    model: Any,
    *,
    model_name: str,
    X_example: pd.DataFrame,
    tracking_uri: str,
    feature_names: Sequence[str] | None = None,
    run_id: str | None = None,
    experiment_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    run_tags: Mapping[str, str] | None = None,
    version_tags: Mapping[str, str] | None = None,
    trusted_types: Iterable[str] = (),
    task: Task | None = None,
    string_features: Sequence[str] = (),
    allow_missing: bool = False,
) -> RegisteredModel:
    """Log ``model`` to MLflow and register it as a new version of ``model_name``.

    Logs into ``run_id`` when given, else into the active run, else into a new
    run in ``experiment_name`` (default: the model name). ``X_example`` gives
    the feature order (its columns, unless ``feature_names``) and the input
    example. skops types trusted: ``trusted_types`` plus those declared for
    ``model_name`` (``declare_trusted_types``).
    """
    import mlflow
    from mlflow import MlflowClient

    trusted_types = [*trusted_types, *declared_trusted_types(model_name)]

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    active = mlflow.active_run()
    if run_id is not None and (active is None or active.info.run_id != run_id):
        ctx: Any = mlflow.start_run(run_id=run_id, nested=active is not None)
    elif active is not None:
        ctx = _NullContext(active)
    else:
        from mlcicd_dagster.models.registry import ensure_experiment

        exp_id = ensure_experiment(tracking_uri, experiment_name or model_name)
        ctx = mlflow.start_run(experiment_id=exp_id)
    with ctx as run:
        if params:
            mlflow.log_params({k: _param_str(v) for k, v in params.items()})
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        if run_tags:
            mlflow.set_tags(dict(run_tags))
        info = log_model_to_run(
            model,
            X_example=X_example,
            feature_names=feature_names,
            registered_model_name=model_name,
            trusted_types=trusted_types,
            task=task,
            string_features=string_features,
            allow_missing=allow_missing,
        )
        run_id_out = run.info.run_id
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for key, value in (version_tags or {}).items():
        client.set_model_version_tag(model_name, version, key, str(value))
    return RegisteredModel(
        name=model_name,
        version=version,
        run_id=run_id_out,
        model_uri=f"models:/{model_name}/{version}",
        flavor=detect_flavor(model),
    )


class _NullContext:
    def __init__(self, value: Any):
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: object) -> None:
        return None


def _param_str(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's limit on a param value


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------
def resolve_model_version(model_uri: str, tracking_uri: str | None = None) -> tuple[str, str]:
    """``models:/name@alias`` or ``models:/name/3`` -> (pinned ``models:/name/3``, ``"3"``).

    Pinning first means an alias moved during the download cannot mix versions.
    Other URIs (``runs:/``, paths) are returned unchanged with version ``""``.
    """
    if not model_uri.startswith("models:/"):
        return model_uri, ""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    rest = model_uri[len("models:/") :].strip("/")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
            return f"models:/{name}/{mv.version}", str(mv.version)
        name, _, version = rest.partition("/")
        if version.isdigit():
            client.get_model_version(name, version)  # fail early with a clear error
            return f"models:/{name}/{version}", version
    except MlflowException as exc:
        raise ModelLoadError(f"cannot resolve {model_uri}: {exc.message}") from exc
    raise ModelLoadError(f"unsupported model URI {model_uri!r}: use models:/name/<n> or @alias")


def load_predictor(
    model_uri: str,
    *,
    tracking_uri: str | None = None,
    version: str | None = None,
    trusted_types: Iterable[str] = (),
    device: str | None = None,
) -> Predictor:
    """Load a registered model (``models:/name@alias``, ``models:/name/3``, ``runs:/...``
    or a local model folder) as a ``Predictor`` whose ``version`` is the registry version
    (or ``version`` when given).

    skops types trusted: ours, ``trusted_types`` and what the model's pipeline declared
    (``declare_trusted_types``); never what the artifact says.

    Raises ``ModelLoadError`` naming the problem (unknown model/alias, pickled
    artifact, untrusted skops types, unsupported flavor, output that misfits the task).
    """
    # A progress bar per download is noise in server and Dagster logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    if tracking_uri is None:
        tracking_uri = mlflow.get_tracking_uri()
    trusted = [*trusted_types, *declared_trusted_types(model_name_of(model_uri))]
    pinned, resolved_version = resolve_model_version(model_uri, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="mlcicd-model-") as tmp:
        if Path(pinned).is_dir():
            local = Path(pinned)
        else:
            from mlflow.exceptions import MlflowException

            try:
                # Both: resolving a models:/ URI also reads the logged model through the
                # tracking store, and an unset one is MLflow's default ./mlflow.db.
                mlflow.set_tracking_uri(tracking_uri)
                mlflow.set_registry_uri(tracking_uri)
                local = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=pinned, dst_path=tmp, tracking_uri=tracking_uri
                    )
                )
            except MlflowException as exc:
                raise ModelLoadError(f"cannot download {pinned}: {exc.message}") from exc
        return load_predictor_from_dir(
            local,
            version=version or resolved_version or model_uri,
            trusted_types=trusted,
            device=device,
        )


def read_model_block(model_dir: Path) -> dict[str, Any]:
    """Our metadata block of a local MLflow model folder (``{}`` for foreign models)."""
    from mlflow.models import Model

    mlmodel_path = Path(model_dir) / "MLmodel"
    if not mlmodel_path.exists():
        raise ModelLoadError(f"{model_dir} is not an MLflow model folder (no MLmodel file)")
    return dict((Model.load(str(mlmodel_path)).metadata or {}).get(METADATA_KEY, {}))


def read_model_meta(model_dir: Path) -> tuple[dict[str, Any], list[str], str]:
    """(flavors, feature names, flavor) of a local MLflow model folder (names may be empty)."""
    from mlflow.models import Model

    mlmodel_path = Path(model_dir) / "MLmodel"
    if not mlmodel_path.exists():
        raise ModelLoadError(f"{model_dir} is not an MLflow model folder (no MLmodel file)")
    mlmodel = Model.load(str(mlmodel_path))
    ours = (mlmodel.metadata or {}).get(METADATA_KEY, {})
    flavor = ours.get("flavor") or (
        "sklearn"
        if "sklearn" in mlmodel.flavors
        else "torch"
        if "pytorch" in mlmodel.flavors
        else ""
    )
    names = list(ours.get("feature_names") or [])
    if not names and mlmodel.signature is not None and mlmodel.signature.inputs.has_input_names():
        names = list(mlmodel.signature.inputs.input_names())
    return mlmodel.flavors, names, flavor


def load_predictor_from_dir(
    model_dir: Path,
    *,
    version: str = "local",
    trusted_types: Iterable[str] = (),
    device: str | None = None,
) -> Predictor:
    """Build a ``Predictor`` from a downloaded MLflow model folder."""
    flavors, names, flavor = read_model_meta(model_dir)
    block = read_model_block(model_dir)
    try:
        task = task_from_meta(block)
    except TaskError as exc:
        raise ModelLoadError(f"model at {model_dir} records an invalid task: {exc}") from exc
    if flavor == "sklearn":
        conf = flavors["sklearn"]
        fmt = conf.get("serialization_format", "pickle")
        if fmt != "skops":
            raise ModelLoadError(
                f"refusing to load a scikit-learn model serialized as {fmt!r}: only skops "
                "artifacts are loaded (pickle can run arbitrary code)"
            )
        import skops.io
        from skops.io.exceptions import UntrustedTypesFoundException

        path = Path(model_dir) / conf["pickled_model"]
        trusted = sorted(set(TRUSTED_SKLEARN_TYPES) | set(trusted_types))
        try:
            # skops audits the file against ``trusted`` before constructing anything; a
            # separate get_untrusted_types() first would parse and audit it twice.
            estimator = skops.io.load(path, trusted=trusted)
        except UntrustedTypesFoundException:
            untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(trusted))
            raise ModelLoadError(
                f"model artifact contains untrusted types: {', '.join(untrusted)} "
                "(declare them in the pipeline's `trusted_types` if you trust them)"
            ) from None
        return SklearnPredictor(
            estimator,
            _require_names(names, model_dir),
            version,
            task=task,
            string_features=list(block.get("string_features") or []),
            allow_missing=bool(block.get("allow_missing", False)),
            trusted_types=[t for t in trusted if t not in TRUSTED_SKLEARN_TYPES],
        )
    if flavor == "torch":
        import mlflow.pytorch
        import torch
        from mlflow.exceptions import MlflowException

        names = _require_names(names, model_dir)
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            module = mlflow.pytorch.load_model(str(model_dir), device="cpu")
        except MlflowException as exc:
            raise ModelLoadError(f"cannot load torch model: {exc.message}") from exc
        if dev != "cpu":
            module = module.to(dev)
        predictor = TorchPredictor(
            module, names, version, task=task, device=dev, input_dtype=_tensor_dtype(model_dir)
        )
        try:  # a probe: an output that misfits the task is refused at load, not per request
            predictor.predict(np.zeros((2, len(names)), np.float32))
        except TaskError as exc:
            raise ModelLoadError(f"model at {model_dir} does not fit its task: {exc}") from exc
        return predictor
    raise ModelLoadError(f"unsupported model flavor {flavor!r} in {model_dir}")


def _tensor_dtype(model_dir: Path) -> Any:
    """The input dtype of a torch version's tensor signature: float64 since the logged
    graph casts inside, float32 for versions logged before (and without a signature)."""
    from mlflow.models import Model

    signature = Model.load(str(Path(model_dir) / "MLmodel")).signature
    schema = signature.inputs if signature is not None else None
    if schema is not None and schema.is_tensor_spec() and len(schema.inputs) == 1:
        dtype = np.dtype(schema.inputs[0].type)
        if dtype in (np.dtype(np.float32), np.dtype(np.float64)):
            return dtype
    return np.dtype(np.float32)


def _require_names(names: list[str], model_dir: Path) -> list[str]:
    if not names:
        raise ModelLoadError(f"model at {model_dir} does not record its feature names")
    return names
