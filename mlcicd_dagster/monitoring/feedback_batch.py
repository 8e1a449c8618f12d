"""Feedback becomes data: labelled production rows as a new landed batch of the dataset.

The batch is written into ``Home.landing(dataset)`` like any file a user drops
there, so it goes through the same data gate (suite, drift, duplicates,
quarantine) before it can reach a training set: never a side door into training.

* Rows: served predictions (``track != 'shadow'``) of the window ``[start, end)``
  that have a valid 0/1 label by ``as_of`` (same join and last-feedback-wins rule as
  the monitoring window). Features come from the prediction log, the label from the
  feedback log.
* Columns: exactly the dataset's: the ID column (when the dataset has one: taken
  from the logged features if the server logged it, else a deterministic id derived
  from the request id), the features, the label. Nothing else, so the suite's
  column checks see an ordinary batch.
* Hard examples (rows the served model got wrong at ``threshold``) are flagged in
  metadata only: the Parquet file's key-value metadata (``mlcicd.hard_examples``)
  and a sidecar JSON under ``Home.monitoring`` (not in landing, where it would be
  mistaken for a batch), and in the returned :class:`FeedbackBatch`.
* Atomic and idempotent: written to a dot-temp file in the landing folder and
  renamed; the file name is a function of the window, so exporting the same window
  twice finds the first file and writes nothing (the landing zone is never edited).
  Labels that arrive after a window was exported are not exported again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.monitoring.window import load_window, logged_columns, utc
from mlcicd_dagster.platform.atomic import atomic_write_json, atomic_write_with
from mlcicd_dagster.platform.home import Home

HARD_EXAMPLES_KEY = b"mlcicd.hard_examples"
SOURCE_KEY = b"mlcicd.source"
ID_BITS = 62  # deterministic ids stay positive in int64 and far from small real ids' collisions


@dataclass(frozen=True)
class FeedbackBatch:
    path: Path | None  # the landed file (None when the window had no labelled rows)
    created: bool  # False: nothing written (already exported, or nothing to export)
    n_rows: int
    n_hard: int
    hard_example_ids: tuple[Any, ...]  # values of the ID column (or row numbers without one)
    window: str
    reason: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        d["hard_example_ids"] = [_py(v) for v in self.hard_example_ids]
        return json.loads(json.dumps(d, default=str))


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def batch_name(model_name: str, start: dt.datetime, end: dt.datetime) -> str:
    s = utc(start).strftime("%Y%m%dT%H%M%SZ")
    e = utc(end).strftime("%Y%m%dT%H%M%SZ")
    return f"feedback-{model_name}-{s}-{e}.parquet"


def deterministic_id(request_id: str) -> int:
    """A stable positive int64 id for a request (blake2b, 62 bits)."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - ID_BITS)


def export_feedback_batch(
    home: Home,
    model_name: str,
    dataset: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    features: Sequence[str],
    label: str,
    id_column: str | None = None,
    dtypes: Mapping[str, Any] | None = None,
    threshold: float = 0.5,
    as_of: dt.datetime | None = None,
    min_rows: int = 1,
    task: Any = None,
) -> FeedbackBatch:
    """Write the window's labelled rows as ``feedback-<model>-<start>-<end>.parquet``.

    ``features``/``label``/``id_column``: the dataset's columns (the batch has
    exactly ``[id_column] + features + [label]``, in that order). ``dtypes``:
    optional column -> dtype to cast to (e.g. the training set's dtypes); a value
    that does not survive the cast (1.5 into an int column) is an error naming the
    column. ``min_rows``: fewer labelled rows than this and nothing is written.
    ``task``: the pipeline's ``models.tasks.Task`` (``None``: binary 0/1). Labels that do
    not fit it are left out; a class label is written as its declared class (``"owl"``,
    ``3``), a regression label as its number. Hard examples: a binary model's side of
    ``threshold`` or a multiclass model's predicted class (from the logged class
    probabilities) that is not the label; none for regression.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = list(features)
    if label in features or (id_column is not None and id_column in (*features, label)):
        raise ValueError("label, id column and features must be distinct columns")
    start, end = utc(start), utc(end)
    name = batch_name(model_name, start, end)
    target = home.landing(dataset) / name
    sidecar = home.monitoring / model_name / "feedback" / f"{name}.json"
    window = f"{start.isoformat()}..{end.isoformat()}"
    if target.exists():
        meta = _read_sidecar(sidecar)
        return FeedbackBatch(
            target,
            False,
            int(meta.get("n_rows", pq.ParquetFile(target).metadata.num_rows)),
            int(meta.get("n_hard", 0)),
            tuple(meta.get("hard_example_ids", ())),
            window,
            "already exported: the landing zone is never edited",
            meta,
        )

    logged_id = id_column is not None and id_column in logged_columns(home, model_name)
    data = load_window(
        home,
        model_name,
        start,
        end,
        features=[*features, id_column] if logged_id and id_column else features,
        as_of=as_of,
        join_features=True,
        with_probabilities=getattr(task, "name", "") == "multiclass",
    )
    df = data.frame
    df = df[(df["track"] != "shadow") & df["label"].notna()]
    if task is None:
        df = df[df["label"].isin([0.0, 1.0])]
    elif len(df):
        df = df[~task.check_labels(df["label"]).bad]
    df = df.drop_duplicates("request_id").sort_values(["ts", "request_id"], kind="stable")
    # Identical requests with the same label are one training example: a client that
    # retries or polls must not outweigh the others, and its copies would otherwise
    # straddle the train/holdout split and flatter the holdout.
    n_labelled = len(df)
    df = df.drop_duplicates([*features, "label"], keep="last")
    if len(df) < min_rows:
        return FeedbackBatch(
            None,
            False,
            int(len(df)),
            0,
            (),
            window,
            f"{len(df)} labelled rows in the window (< {min_rows}): nothing to export",
        )

    out = pd.DataFrame(index=range(len(df)))
    if id_column is not None:
        if logged_id:
            out[id_column] = df[id_column].to_numpy()
        else:
            out[id_column] = np.array(
                [deterministic_id(r) for r in df["request_id"].astype(str)], dtype=np.int64
            )
    for c in features:
        out[c] = df[c].to_numpy()
    task_name = getattr(task, "name", None)
    if task is None:
        out[label] = df["label"].to_numpy().astype(np.int64)
    elif task_name == "regression":
        out[label] = task.encode(df["label"])
    else:  # the declared class, whatever form the client sent ("3", 3.0, 3)
        out[label] = task.decode(task.encode(df["label"]))
    if dtypes:
        out = _cast(out, dtypes)

    if task_name == "regression":
        wrong = np.zeros(len(df), dtype=bool)
    elif task_name == "multiclass":
        y = task.encode(df["label"])
        k = len(task.classes)
        wrong = np.array(
            [
                p is not None and len(p) == k and int(np.argmax(p)) != int(c)
                for p, c in zip(df["probabilities"], y, strict=True)
            ],
            dtype=bool,
        )
    else:
        y = task.encode(df["label"]) if task is not None else df["label"].to_numpy() == 1.0
        wrong = (df["prediction"].to_numpy() >= threshold) != (np.asarray(y) == 1)
    hard_idx = np.flatnonzero(wrong)
    hard_ids = (
        tuple(_py(v) for v in out[id_column].to_numpy()[hard_idx])
        if id_column is not None
        else tuple(int(i) for i in hard_idx)
    )
    meta = {
        "source": "feedback",
        "model_name": model_name,
        "dataset": dataset,
        "window": window,
        "as_of": (utc(as_of) if as_of else dt.datetime.now(dt.UTC)).isoformat(),
        "n_rows": int(len(out)),
        "n_repeats_dropped": int(n_labelled - len(df)),
        "n_hard": int(len(hard_idx)),
        "threshold": threshold,
        "hard_example_ids": [_py(v) for v in hard_ids],
        "hard_example_rows": [int(i) for i in hard_idx],
        "model_versions": sorted(df["model_version"].astype(str).unique().tolist()),
        "id_source": None if id_column is None else ("logged" if logged_id else "request_id hash"),
        "file": name,
    }
    table = pa.Table.from_pandas(out, preserve_index=False)
    kv = dict(table.schema.metadata or {})
    kv[SOURCE_KEY] = json.dumps({k: v for k, v in meta.items() if "hard" not in k}).encode()
    kv[HARD_EXAMPLES_KEY] = json.dumps(meta["hard_example_ids"]).encode()
    table = table.replace_schema_metadata(kv)
    # The sidecar first: a crash between the two leaves no batch without its metadata.
    atomic_write_json(sidecar, meta)
    atomic_write_with(target, lambda tmp: pq.write_table(table, tmp))
    return FeedbackBatch(
        target,
        True,
        int(len(out)),
        int(len(hard_idx)),
        hard_ids,
        window,
        f"exported {len(out)} labelled rows ({len(hard_idx)} hard examples)",
        meta,
    )


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def hard_examples(path: Path) -> list[Any]:
    """The hard-example ids recorded in a feedback batch file's Parquet metadata."""
    import pyarrow.parquet as pq

    kv = pq.read_schema(path).metadata or {}
    raw = kv.get(HARD_EXAMPLES_KEY)
    return list(json.loads(raw)) if raw else []


def _cast(df: pd.DataFrame, dtypes: Mapping[str, Any]) -> pd.DataFrame:
    out = df.copy()
    for col, dtype in dtypes.items():
        if col not in out.columns:
            continue
        target = (
            np.dtype(dtype) if not isinstance(dtype, pd.api.extensions.ExtensionDtype) else dtype
        )
        src = out[col]
        try:
            cast = src.astype(target)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {col!r} cannot be cast to {dtype}: {exc}") from exc
        integral = isinstance(target, np.dtype) and np.issubdtype(target, np.integer)
        if integral and np.issubdtype(src.dtype, np.floating):
            if not np.array_equal(cast.to_numpy(dtype=np.float64), src.to_numpy(dtype=np.float64)):
                raise ValueError(
                    f"column {col!r} has values that change when cast to {dtype} "
                    "(non-integral, NaN or out of range)"
                )
        out[col] = cast
    return out
