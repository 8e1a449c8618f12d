"""What makes ``/invocations`` answer as ``mlflow models serve`` answers (docs/serving.md).

Two paths turn a request body into the feature matrix of one model version:

* the **fast path** (``payload.fast_matrix``) takes the common, well-formed JSON bodies
  without pandas. It only accepts bodies on which MLflow's parsing and schema enforcement
  would produce exactly the same feature values, and hands everything else on;
* the **MLflow path** (:class:`MlflowParser`) runs MLflow's own scoring-server code on the
  body: ``mlflow.pyfunc.scoring_server.invocations`` with the version's logged ``MLmodel``
  (signature, params schema) and a stand-in model that only captures what MLflow would
  have passed to the real model. So CSV bodies, every lenient conversion MLflow makes
  (numeric strings, ``NaN`` tokens, booleans, ``instances`` as columns...) and every
  rejection (status code and ``{"error_code", "message"}`` body, or MLflow's plain-text
  415 answers) are MLflow's, byte for byte; the captured frame is then scored by our
  micro-batched model like any other request.

mlflow is imported lazily: the server imports it anyway to load models.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

JSON = "application/json"
CSV = "text/csv"

# MLflow's error codes (mlflow.protos.databricks_pb2) for the statuses we answer ourselves.
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "BAD_REQUEST",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}

MODEL_ERROR_MESSAGE = (
    "Encountered an unexpected error while evaluating the model. Verify that the serialized "
    "input Dataframe is compatible with the model for inference."
)
"""MLflow's message (HTTP 400, ``BAD_REQUEST``) when the model's predict raises."""


def error_body(status: int, message: str, error_code: str | None = None, **extra: Any) -> bytes:
    """MLflow's error document: ``{"error_code": ..., "message": ...}`` (plus ``extra``)."""
    import orjson

    code = error_code or ERROR_CODES.get(status, "INTERNAL_ERROR")
    return orjson.dumps({"error_code": code, "message": message, **extra})


@dataclass(frozen=True)
class Answer:
    """A finished answer (MLflow's error or 415): status, body bytes, media type."""

    status: int
    body: bytes
    media_type: str


def content_type_fast_json(ctype: str | None) -> bool:
    """True when MLflow would read the body as JSON and nothing needs checking further.

    MLflow splits the header on ``;``: the media type must be exactly
    ``application/json`` and the only parameter ``charset`` with value ``utf-8`` (any case).
    A missing header is read as JSON (MLflow answers 500 there: a deliberate difference).
    """
    if ctype is None or ctype == JSON:
        return True
    mime, _, rest = ctype.partition(";")
    if mime.strip() != JSON:
        return False
    key, _, value = rest.partition("=")
    return key.strip() == "charset" and value.strip().lower() == "utf-8" and ";" not in value


@dataclass(frozen=True)
class FastSpec:
    """What the fast path needs of a model: its features, which of them are integers or
    text, and whether columns are taken by position (a tensor signature)."""

    names: tuple[str, ...]
    integer: tuple[bool, ...]  # column declared ``long``/``integer`` in the signature
    text: tuple[bool, ...] = ()  # column declared ``string``: JSON strings, an object matrix
    positional: bool = False  # tensor signature: MLflow ignores names, keeps the body's order
    # derived once (the fast path reads them on every request)
    names_list: list[str] = field(init=False, repr=False, compare=False)
    any_text: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names_list", list(self.names))
        object.__setattr__(self, "any_text", any(self.text))

    @property
    def any_integer(self) -> bool:
        return any(self.integer)


_FAST_TYPES = frozenset({"double", "long", "integer", "string"})


def plan_for(meta: Any, feature_names: Sequence[str]) -> tuple[FastSpec | None, bool]:
    """(fast path spec or None, whether MLflow's code parses what the fast path does not).

    * a column signature (scikit-learn models): MLflow's parsing, and the fast path when
      every column is required and a double, an integer or a string (other types convert
      values in ways the fast path would not reproduce);
    * a tensor signature of one ``(-1, d)`` float tensor (torch models): MLflow's parsing,
      and the fast path for bodies whose columns are the model's in its order (MLflow takes
      a tensor model's columns by position, whatever their names);
    * no signature: our own parser (``payload``), by feature name.
    """
    names = tuple(feature_names)
    plain = (False,) * len(names)
    schema = meta.get_input_schema() if meta is not None else None
    if schema is None:
        return FastSpec(names, plain, plain), False
    if schema.is_tensor_spec():
        if schema.has_input_names() or len(schema.inputs) != 1:
            return None, True
        spec = schema.inputs[0]
        shape = tuple(getattr(spec, "shape", ()) or ())
        kind = getattr(getattr(spec, "type", None), "kind", "")
        if len(shape) == 2 and shape[1] == len(names) and kind == "f":
            return FastSpec(names, plain, plain, positional=True), True
        return None, True
    if not schema.has_input_names():
        return None, True
    types = {}
    for col in schema.inputs:
        t = getattr(getattr(col, "type", None), "name", None)
        if t not in _FAST_TYPES or not getattr(col, "required", True):
            return None, True
        types[col.name] = t
    if set(types) != set(names):
        return None, True
    return (
        FastSpec(
            names,
            tuple(types[n] in ("long", "integer") for n in names),
            tuple(types[n] == "string" for n in names),
        ),
        True,
    )


def text_columns(meta: Any, feature_names: Sequence[str]) -> tuple[bool, ...]:
    """Which features the version's signature declares ``string``."""
    schema = meta.get_input_schema() if meta is not None else None
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return (False,) * len(feature_names)
    types = {c.name: getattr(getattr(c, "type", None), "name", None) for c in schema.inputs}
    return tuple(types.get(n) == "string" for n in feature_names)


class _Capture:
    """Stands in for the model inside MLflow's scoring code: keeps what MLflow passes."""

    def __init__(self) -> None:
        self.data: Any = None

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        self.data = data
        n = len(data) if hasattr(data, "__len__") else 1
        return np.zeros(n)


class MlflowParser:
    """Runs MLflow's scoring-server parsing and schema enforcement for one model version."""

    def __init__(self, meta: Any, feature_names: Sequence[str]):
        self.meta = meta
        self.names = list(feature_names)
        self.text = text_columns(meta, feature_names)

    def parse(self, body: bytes, content_type: str | None) -> np.ndarray | Answer:
        """The feature matrix MLflow would score, or MLflow's answer when it would not score.

        Blocking (pandas, MLflow): call it in a thread.
        """
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc import PyFuncModel
        from mlflow.pyfunc.scoring_server import invocations

        capture = _Capture()
        model = PyFuncModel(model_meta=self.meta, model_impl=capture)
        try:
            result = invocations(body, content_type or JSON, model, self.meta.get_input_schema())
        except MlflowException as exc:
            return Answer(exc.get_http_status_code(), exc.serialize_as_json().encode(), JSON)
        except RecursionError:  # MLflow answers a bare 500; a client error (docs/serving.md)
            return Answer(400, error_body(400, "JSON nested too deeply"), JSON)
        except Exception:  # MLflow's server lets these through as a bare 500
            return Answer(
                500, error_body(500, f"internal error: {traceback.format_exc(limit=1)}"), JSON
            )
        if result.status != 200:
            text = result.response
            if result.mimetype == JSON:
                raw = text.encode() if isinstance(text, str) else bytes(text)
                return Answer(result.status, raw, JSON)
            # MLflow's 415s are plain text; ours carry the same text in its error document.
            message = text if isinstance(text, str) else bytes(text).decode("utf-8", "replace")
            return Answer(result.status, error_body(result.status, message), JSON)
        return self._matrix(capture.data)

    def _matrix(self, data: Any) -> np.ndarray | Answer:
        """What MLflow would pass the model, as the server's feature matrix: float64, or
        an object matrix (numbers as floats, text as is) for a model with text columns."""
        import pandas as pd

        try:
            if isinstance(data, pd.DataFrame):
                frame = data
                if all(n in frame.columns for n in self.names):
                    frame = frame[self.names]
                if any(self.text):
                    return object_matrix(frame, self.text)
                return np.ascontiguousarray(frame.to_numpy(dtype=np.float64))
            if isinstance(data, dict):
                return np.ascontiguousarray(
                    np.column_stack([np.asarray(data[n], dtype=np.float64) for n in self.names])
                )
            arr = np.asarray(data, dtype=np.float64)
            return np.ascontiguousarray(arr.reshape(len(arr), -1))
        except Exception:  # the real model's predict would have raised: MLflow's 400
            return Answer(400, error_body(400, MODEL_ERROR_MESSAGE), JSON)


def object_matrix(frame: Any, text: Sequence[bool]) -> np.ndarray:
    """A frame with text columns as one ``(n, d)`` object matrix: numbers as floats
    (missing as NaN), text columns' values as they are."""
    out = np.empty(frame.shape, dtype=object)
    for j, is_text in enumerate(text):
        col = frame.iloc[:, j]
        out[:, j] = col.to_numpy(dtype=object) if is_text else col.to_numpy(dtype=np.float64)
    return out


def load_meta(model_uri: str, tracking_uri: str) -> Any:
    """The version's ``MLmodel`` (signature, params schema), read from the registry."""
    import mlflow
    from mlflow.models import Model

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return Model.load(model_uri)


def mlflow_version() -> str:
    """What MLflow's ``/version`` answers: the MLflow version (the server's library)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlflow")
    except PackageNotFoundError:  # pragma: no cover - mlflow is a dependency
        return "unknown"


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlcicd-dagster")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def predictions_json(outputs: np.ndarray) -> bytes:
    """``{"predictions": ...}`` as MLflow writes a numpy result (``tolist()``)."""
    import orjson

    return orjson.dumps({"predictions": outputs.tolist()})
