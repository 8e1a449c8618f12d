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

MODEL_ARTIFACT_NAME = "model"
"""Name of the model inside its MLflow run (``runs:/<id>/model``)."""

METADATA_KEY = "mlcicd"
"""Key of our block in the MLmodel ``metadata``: feature names and flavor."""

TRUSTED_SKLEARN_TYPES: tuple[str, ...] = (
    # The only non-default type in a fitted HistGradientBoostingClassifier; skops
    # trusts sklearn estimators, numpy arrays and builtins by itself.
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)

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
    features: pd.DataFrame | np.ndarray, feature_names: Sequence[str], dtype: Any = np.float64
) -> np.ndarray:
    """The rows of ``features`` as a C-contiguous array in ``feature_names`` order.

    Raises ``ValueError`` naming missing, non-numeric or non-finite columns, so
    that a server can turn it into a 4xx answer.
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
    if matrix.size and not np.isfinite(matrix).all():
        bad_cols = [str(cols[int(i)]) for i in np.flatnonzero(~np.isfinite(matrix).all(axis=0))]
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


class SklearnPredictor:
    """A fitted scikit-learn classifier behind the ``Predictor`` interface."""

    flavor = "sklearn"

    def __init__(self, estimator: Any, feature_names: Sequence[str], version: str = "local"):
        self.estimator = estimator
        self.feature_names = list(feature_names)
        self.version = str(version)
        classes = list(getattr(estimator, "classes_", [0, 1]))
        if len(classes) != 2:
            raise ModelLoadError(f"expected a binary classifier, classes are {classes}")
        self._positive = 1 if 1 not in classes else classes.index(1)
        # Estimators fitted on a DataFrame check column names; give them one.
        self._wants_frame = hasattr(estimator, "feature_names_in_")

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        matrix = to_matrix(features, self.feature_names, np.float64)
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        x: Any = pd.DataFrame(matrix, columns=self.feature_names) if self._wants_frame else matrix
        if matrix.shape[0] <= SINGLE_THREAD_MAX_ROWS:
            with _openmp_single_thread():
                proba = self.estimator.predict_proba(x)
        else:
            proba = self.estimator.predict_proba(x)
        return np.asarray(proba[:, self._positive], dtype=np.float64)


class TorchPredictor:
    """A torch module mapping float32 ``(n, d)`` to P(positive) ``(n,)`` or ``(n, 1)``."""

    flavor = "torch"

    def __init__(self, module: Any, feature_names: Sequence[str], version: str = "local"):
        import torch

        self.module = module
        self.feature_names = list(feature_names)
        self.version = str(version)
        self._torch = torch
        if hasattr(module, "eval"):
            try:
                module.eval()
            except (NotImplementedError, RuntimeError):
                pass  # exported GraphModules refuse train/eval switches; they are fixed graphs

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        matrix = to_matrix(features, self.feature_names, np.float32)
        n = matrix.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.float64)
        if n == 1:
            # torch.export specialises size-1 dims; a duplicated row keeps the graph dynamic.
            matrix = np.repeat(matrix, 2, axis=0)
        with self._torch.inference_mode():
            out = self.module(self._torch.from_numpy(matrix))
        probs = out.detach().to("cpu").reshape(-1).double().numpy()
        return probs[:n]


# ---------------------------------------------------------------------------
# logging and registration
# ---------------------------------------------------------------------------
def detect_flavor(model: Any) -> str:
    """``"torch"`` for a ``torch.nn.Module``, ``"sklearn"`` for anything with ``predict_proba``."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    if hasattr(model, "predict_proba"):
        return "sklearn"
    raise TypeError(
        f"cannot log {type(model).__name__}: expected a scikit-learn classifier "
        "(with predict_proba) or a torch.nn.Module returning P(positive)"
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
            f"{', '.join(untrusted)}; pass them explicitly as trusted_types=[...] if you trust "
            "them (we never fall back to pickle)"
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
) -> Any:
    """Log ``model`` into the *active* MLflow run; returns MLflow's ``ModelInfo``."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    flavor = detect_flavor(model)
    names = list(feature_names) if feature_names is not None else [str(c) for c in X_example]
    example = X_example[names].head(TORCH_EXAMPLE_ROWS)
    if len(example) < 2:
        raise ValueError("X_example needs at least 2 rows (used to trace and document the model)")
    metadata = {METADATA_KEY: {"feature_names": names, "flavor": flavor, **(extra_metadata or {})}}
    if flavor == "sklearn":
        trusted = check_skops_types(model, trusted_types)
        from mlflow.models import infer_signature

        as_matrix = example.to_numpy(np.float64)
        proba = model.predict_proba(example if _fitted_on_frame(model) else as_matrix)
        # The signature describes the data as the data gate passes it: integer columns stay
        # integers (``long``), so ``mlflow.pyfunc.load_model(uri).predict(batch)`` takes a
        # landed batch as is (MLflow refuses int64 -> double as unsafe).
        signature = infer_signature(example, proba)
        with warnings.catch_warnings():
            # MLflow scores the example frame through pyfunc; models fitted on arrays warn.
            warnings.filterwarnings("ignore", message="X has feature names")
            return mlflow.sklearn.log_model(
                model,
                name=MODEL_ARTIFACT_NAME,
                serialization_format="skops",
                skops_trusted_types=trusted,
                signature=signature,
                input_example=example,
                pyfunc_predict_fn="predict_proba",
                metadata=metadata,
                pip_requirements=_pip_requirements("sklearn"),
                registered_model_name=registered_model_name,
            )
    import torch

    module = model.to("cpu").eval()
    x = np.ascontiguousarray(example.to_numpy(np.float32))
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(names)))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]),
    )
    with torch.inference_mode():
        module(torch.from_numpy(x))  # fail here, clearly, if the module does not take (n, d)
    return mlflow.pytorch.log_model(
        module,
        name=MODEL_ARTIFACT_NAME,
        serialization_format="pt2",
        input_example=x,
        signature=signature,
        metadata=metadata,
        pip_requirements=_pip_requirements("torch"),
        registered_model_name=registered_model_name,
    )


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
) -> RegisteredModel:
    """Log ``model`` to MLflow and register it as a new version of ``model_name``.

    Logs into ``run_id`` when given, else into the active run, else into a new
    run in ``experiment_name`` (default: the model name). ``X_example`` gives
    the feature order (its columns, unless ``feature_names``) and the input
    example.
    """
    import mlflow
    from mlflow import MlflowClient

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

    Raises ``ModelLoadError`` naming the problem (unknown model/alias, pickled
    artifact, untrusted skops types, unsupported flavor).
    """
    # A progress bar per download is noise in server and Dagster logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    if tracking_uri is None:
        tracking_uri = mlflow.get_tracking_uri()
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
            trusted_types=trusted_types,
            device=device,
        )


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
                "(pass trusted_types=[...] explicitly if you trust them)"
            ) from None
        return SklearnPredictor(estimator, _require_names(names, model_dir), version)
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
        return (
            _DeviceTorchPredictor(module, names, version, dev)
            if dev != "cpu"
            else (TorchPredictor(module, names, version))
        )
    raise ModelLoadError(f"unsupported model flavor {flavor!r} in {model_dir}")


def _require_names(names: list[str], model_dir: Path) -> list[str]:
    if not names:
        raise ModelLoadError(f"model at {model_dir} does not record its feature names")
    return names


class _DeviceTorchPredictor(TorchPredictor):
    """Moves each batch to the accelerator the module lives on."""

    def __init__(self, module: Any, feature_names: Sequence[str], version: str, device: str):
        super().__init__(module, feature_names, version)
        self.device = device

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        matrix = to_matrix(features, self.feature_names, np.float32)
        n = matrix.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.float64)
        if n == 1:
            matrix = np.repeat(matrix, 2, axis=0)
        with self._torch.inference_mode():
            out = self.module(self._torch.from_numpy(matrix).to(self.device))
        return out.detach().to("cpu").reshape(-1).double().numpy()[:n]
