"""The Open Inference Protocol (KServe v2 / Triton HTTP) request and response bodies.

Routes (``app.py``): ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/<name>[/versions/<v>]``, ``.../ready``, ``POST .../infer``.

An inference request names its input tensors. Either one tensor per feature, named as
the feature, shape ``[n]`` or ``[n, 1]`` (any numeric datatype), or one tensor of shape
``[n, d]`` with the model's ``d`` features in order (any name). A text feature (the
signature says ``string``) is a ``BYTES`` tensor of UTF-8 strings. Tensor data is JSON
(``data``: flat row-major or nested) or binary (the binary tensor extension:
``Inference-Header-Content-Length`` header, ``parameters.binary_data_size`` per input),
as tritonclient sends by default. The answer has one output tensor, ``predictions``:
what ``/invocations`` answers (the logged pyfunc's output), as FP64 JSON data.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from mlcicd_dagster.serving.payload import PayloadError

DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
OUTPUT = "predictions"
BYTES = "BYTES"


def _bytes_elements(raw: bytes, name: str) -> list[str]:
    """The binary tensor extension's BYTES layout: per element a 4-byte little-endian
    length, then that many bytes (UTF-8 text here)."""
    out = []
    i = 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise PayloadError(f"input {name!r}: truncated BYTES element")
        n = int.from_bytes(raw[i : i + 4], "little")
        i += 4
        if i + n > len(raw):
            raise PayloadError(f"input {name!r}: truncated BYTES element")
        try:
            out.append(raw[i : i + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise PayloadError(f"input {name!r}: BYTES element is not UTF-8 text") from None
        i += n
    return out


def _flat(data: Any) -> list[Any]:
    if type(data) is not list:
        return [data]
    if all(type(v) is not list for v in data):
        return data
    return [x for v in data for x in _flat(v)]


def split_binary(body: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """(decoded JSON header, binary tail) of a request body."""
    if header_length is None:
        head, tail = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise PayloadError(
                f"invalid Inference-Header-Content-Length {header_length!r}"
            ) from None
        if not 0 <= n <= len(body):
            raise PayloadError(f"Inference-Header-Content-Length {n} exceeds the body")
        head, tail = body[:n], body[n:]
    try:
        return orjson.loads(head), tail
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"malformed JSON: {exc}") from None


def _tensor(spec: Any, i: int, tail: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    if type(spec) is not dict:
        raise PayloadError(f"inputs[{i}] must be an object")
    name = spec.get("name")
    shape = spec.get("shape")
    datatype = spec.get("datatype")
    dtype: Any = object if datatype == BYTES else DTYPES.get(datatype)  # type: ignore[arg-type]
    if type(name) is not str:
        raise PayloadError(f"inputs[{i}].name must be a string")
    if dtype is None:
        raise PayloadError(
            f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DTYPES)}, {BYTES}"
        )
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise PayloadError(f"input {name!r}: shape must be a list of non-negative integers")
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if type(params) is dict else None
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(tail):
            raise PayloadError(f"input {name!r}: binary_data_size does not fit the body")
        raw = tail[offset : offset + size]
        if dtype is object:
            arr = np.array(_bytes_elements(raw, name), dtype=object)
        else:
            if size % np.dtype(dtype).itemsize:
                raise PayloadError(f"input {name!r}: binary_data_size does not fit {datatype}")
            arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        offset += size
    else:
        if "data" not in spec:
            raise PayloadError(f"input {name!r} has no data")
        try:
            if dtype is object:
                flat = _flat(spec["data"])
                if not all(type(v) is str for v in flat):
                    raise TypeError
                arr = np.array(flat, dtype=object)
            else:
                arr = np.asarray(spec["data"], dtype=dtype)
        except (TypeError, ValueError):
            raise PayloadError(f"input {name!r}: data is not {spec['datatype']}") from None
    count = int(np.prod(shape)) if shape else 1
    if arr.size != count:
        raise PayloadError(f"input {name!r}: {arr.size} values for shape {shape}")
    return name, arr.reshape(shape), offset


_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
_INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})


@functools.lru_cache(maxsize=64)
def _positions(names: tuple[str, ...]) -> dict[str, int]:
    return {n: j for j, n in enumerate(names)}


def _fast_columns(
    inputs: list[Any], names: Sequence[str], text: Sequence[bool]
) -> np.ndarray | None:
    """One JSON tensor per feature, flat data of shape ``[n]``/``[n, 1]``: one numpy call.

    None for anything else (binary data, nested data, one [n, d] tensor...): the general
    path handles it and names what is wrong.
    """
    d = len(names)
    if len(inputs) != d:
        return None
    index = _positions(tuple(names))
    cols: list[Any] = [None] * d
    n = -1
    for spec in inputs:
        if type(spec) is not dict:
            return None
        try:
            j = index[spec["name"]]
            data = spec["data"]
            shape = spec["shape"]
            dtype = spec["datatype"]
        except (KeyError, TypeError):
            return None
        if cols[j] is not None or spec.get("parameters") or type(data) is not list:
            return None
        rows = len(data)
        if n < 0:
            n = rows
        elif rows != n:
            return None
        if shape != [rows] and shape != [rows, 1]:
            return None
        if text and text[j]:
            if dtype != BYTES:
                return None
            for v in data:
                if type(v) is not str:
                    return None
        elif dtype in _FLOAT_TYPES:
            for v in data:
                t = type(v)
                if t is not float and t is not int:
                    return None
        elif dtype in _INT_TYPES:
            for v in data:
                if type(v) is not int:
                    return None
        else:
            return None
        cols[j] = data
    if n <= 0:
        return None
    if text and any(text):
        out = np.empty((n, d), dtype=object)
        for j, c in enumerate(cols):
            out[:, j] = c if text[j] else np.asarray(c, dtype=np.float64)
        return out
    if n == 1:
        return np.array([c[0] for c in cols], dtype=np.float64).reshape(1, d)
    return np.ascontiguousarray(np.array(cols, dtype=np.float64).T)


def infer_matrix(
    obj: Any, tail: bytes, names: Sequence[str], text: Sequence[bool] = ()
) -> tuple[np.ndarray, Any]:
    """(feature matrix, request id) of an inference request for ``names``: float64, or an
    object matrix (numbers as floats, text as str) when ``text`` marks text features."""
    if type(obj) is not dict:
        raise PayloadError("the inference request must be a JSON object with 'inputs'")
    inputs = obj.get("inputs")
    if type(inputs) is not list or not inputs:
        raise PayloadError("the inference request needs a non-empty 'inputs' list")
    text = tuple(text) if any(text) else ()
    fast = _fast_columns(inputs, names, text)
    if fast is not None:
        return _finite(fast, names, text), obj.get("id")
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for i, spec in enumerate(inputs):
        name, arr, offset = _tensor(spec, i, tail, offset)
        if name in tensors:
            raise PayloadError(f"input {name!r} given twice")
        tensors[name] = arr
    d = len(names)
    if len(tensors) == 1:
        ((name, arr),) = tensors.items()
        if arr.ndim == 2 and arr.shape[1] == d and (name not in names or d == 1) and not text:
            if arr.dtype == object:
                raise PayloadError(f"input {name!r}: this model takes numbers, not {BYTES}")
            return _finite(np.ascontiguousarray(arr, dtype=np.float64), names), obj.get("id")
    missing = [n for n in names if n not in tensors]
    if missing:
        raise PayloadError(
            f"missing input tensor(s): {', '.join(missing)} (send one tensor per feature, "
            f"or one [n, {d}] tensor with the features in order: {', '.join(names)})"
        )
    cols = []
    rows = None
    for j, n in enumerate(names):
        arr = tensors[n]
        is_text = bool(text) and text[j]
        if (arr.dtype == object) != is_text:
            raise PayloadError(
                f"input {n!r}: the feature is "
                + (f"text: send a {BYTES} tensor" if is_text else f"a number, not {BYTES}")
            )
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise PayloadError(f"input {n!r}: shape must be [n] or [n, 1], got {list(arr.shape)}")
        if rows is None:
            rows = len(arr)
        elif len(arr) != rows:
            raise PayloadError(f"input {n!r} has {len(arr)} rows, the others {rows}")
        cols.append(arr)
    if not rows:
        raise PayloadError("the inference request has no rows")
    matrix = np.empty((rows, d), dtype=object if text else np.float64)
    for j, c in enumerate(cols):
        matrix[:, j] = c if text and text[j] else np.asarray(c, dtype=np.float64)
    return _finite(matrix, names, text), obj.get("id")


def _finite(matrix: np.ndarray, names: Sequence[str], text: Sequence[bool] = ()) -> np.ndarray:
    numbers = matrix
    if text:
        keep = [j for j, t in enumerate(text) if not t]
        numbers = matrix[:, keep].astype(np.float64)
        names = [names[j] for j in keep]
    if not np.isfinite(numbers).all():
        bad = [names[int(j)] for j in np.flatnonzero(~np.isfinite(numbers).all(axis=0))]
        raise PayloadError(f"non-finite value(s) in input(s): {', '.join(bad)}")
    if not len(matrix):
        raise PayloadError("the inference request has no rows")
    return matrix


def infer_response(model_name: str, version: str, request_id: Any, outputs: np.ndarray) -> bytes:
    arr = np.asarray(outputs, dtype=np.float64)
    doc: dict[str, Any] = {
        "model_name": model_name,
        "model_version": version,
        "outputs": [
            {
                "name": OUTPUT,
                "datatype": "FP64",
                "shape": list(arr.shape),
                "data": arr.reshape(-1).tolist(),
            }
        ],
    }
    if request_id is not None:
        doc["id"] = request_id
    return orjson.dumps(doc)


def model_metadata(
    model_name: str, versions: Sequence[str], names: Sequence[str], integer: Sequence[bool],
    output_shape: Sequence[int], text: Sequence[bool] = (),
) -> dict[str, Any]:  # fmt: skip
    text = tuple(text) or (False,) * len(names)
    return {
        "name": model_name,
        "versions": list(versions),
        "platform": "mlflow_pyfunc",
        "inputs": [
            {"name": n, "datatype": BYTES if t else "INT64" if i else "FP64", "shape": [-1]}
            for n, i, t in zip(names, integer, text, strict=True)
        ],
        "outputs": [{"name": OUTPUT, "datatype": "FP64", "shape": list(output_shape)}],
    }
