"""One monitoring window: the prediction log joined with feedback labels, then measured.

The join (DuckDB over the Parquet parts, ``part-*.parquet`` only, so a part still
being written under its temporary name is never read):

* predictions whose ``ts`` lies in ``[start, end)``;
* feedback whose ``ts`` lies in ``[start, as_of]``: a label cannot precede its
  prediction, and ``as_of`` makes a recomputation reproducible (labels that
  arrive later are seen by a later computation of the same window: late labels
  are expected, not an error);
* **duplicate feedback: the last one wins** (greatest feedback ``ts``; equal
  ``ts`` broken by the later part file), so a client can correct a label. The
  number of overridden rows is reported (``n_duplicate_feedback``);
* a label is a number (``label``) or the text a client sent (``label_text``, e.g.
  ``"setosa"``); labels that do not fit the task (outside {0, 1} for a binary model, not
  a declared class of a multiclass one) are counted per version (``n_invalid_labels``)
  and left out of the metrics;
* a multiclass model's metrics (log-loss, accuracy) use each request's logged class
  probabilities (``probabilities``), its prediction drift the predicted class's share
  besides its probability;
* a shadow-scored request appears once per model version; feature drift uses
  served rows only (``track != 'shadow'``) so no request is counted twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.monitoring.drift import (
    ReferenceLike,
    feature_drift,
    for_version,
    prediction_drift,
)
from mlcicd_dagster.monitoring.metrics import classification_metrics
from mlcicd_dagster.monitoring.result import (
    DriftSummary,
    MonitorConfig,
    MonitoringResult,
    VersionMetrics,
)
from mlcicd_dagster.platform.home import Home

PART_GLOB = "part-*.parquet"  # the log writers' atomic-rename convention
SAMPLE_BUCKETS = 1_000_000  # resolution of the hash sample's fraction
DRIFT_SAMPLE_SEED = 42  # a fixed seed: recomputing a window gives the same drift verdict
BASE_COLUMNS = ("request_id", "ts", "model_version", "track", "prediction")


class MonitoringError(RuntimeError):
    """The logs cannot be read as the documented prediction/feedback schema."""


@dataclass(frozen=True)
class WindowData:
    """The joined rows of one window.

    ``frame``: one row per request and model version: ``model_version``, ``track``,
    ``prediction``, ``label`` (NaN: none yet; object dtype holding the text when a text
    label arrived), ``delay_s`` (feedback ts minus prediction ts), plus
    ``request_id``/``ts``, ``probabilities`` and the features when asked for.
    ``served_features``: the features of served rows (shadow rows left out), read
    without the join (drift needs no labels), unless the features were joined.
    """

    frame: pd.DataFrame
    n_duplicate_feedback: int
    served_features: pd.DataFrame | None = None


def utc(t: dt.datetime) -> dt.datetime:
    """Aware UTC datetime; naive input is taken to be UTC already."""
    if not isinstance(t, dt.datetime):
        raise TypeError(f"expected a datetime, got {type(t).__name__}")
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _parts(folder: Path) -> str | None:
    folder = Path(folder)
    if not folder.is_dir() or next(folder.glob(PART_GLOB), None) is None:
        return None
    return str(folder / PART_GLOB)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def logged_columns(home: Home, model_name: str) -> set[str]:
    """Column names present in the prediction log (empty set when there is no log)."""
    import duckdb

    glob = _parts(home.predictions(model_name))
    if glob is None:
        return set()
    with duckdb.connect() as con:
        return _describe(con, glob)


def load_window(
    home: Home,
    model_name: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    features: Sequence[str] = (),
    as_of: dt.datetime | None = None,
    max_label_delay: dt.timedelta | None = None,
    join_features: bool = False,
    with_request_id: bool = False,
    max_feature_rows: int | None = None,
    with_probabilities: bool = False,
) -> WindowData:
    """Join the window's predictions with their feedback labels (see module doc).

    ``join_features``: features go into ``frame`` (one row per request and version,
    with ``request_id``); otherwise they are read separately for served rows only
    (``served_features``), at most ``max_feature_rows`` of them (a uniform random
    sample, seeded, when there are more). ``with_probabilities``: each row's logged class
    probabilities (``probabilities``, None where the log has none).
    """
    import duckdb

    start, end = utc(start), utc(end)
    if end <= start:
        raise ValueError(f"empty window: end {end} is not after start {start}")
    as_of = utc(as_of) if as_of is not None else dt.datetime.now(dt.UTC)
    features = list(dict.fromkeys(features))
    with_request_id = with_request_id or join_features
    base = ["model_version", "track", "prediction"]
    if with_probabilities:
        base.append("probabilities")
    keys = (["request_id", "ts"] if with_request_id else []) + base
    joined_cols = keys + (features if join_features else []) + ["label", "delay_s"]
    pred_glob = _parts(home.predictions(model_name))
    if pred_glob is None:
        empty = pd.DataFrame({c: pd.Series([], dtype=float) for c in joined_cols})
        feats = None if join_features or not features else pd.DataFrame(columns=features)
        return WindowData(empty, 0, feats)
    fb_glob = _parts(home.feedback(model_name))
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        cols = _describe(con, pred_glob)
        missing = [c for c in (*BASE_COLUMNS, *features) if c not in cols]
        prob_sql = "probabilities" if "probabilities" in cols else "NULL::DOUBLE[] AS probabilities"
        if missing:
            raise MonitoringError(
                f"prediction log {home.predictions(model_name)} lacks columns {missing}"
            )
        fb_upper = as_of if max_label_delay is None else min(as_of, end + max_label_delay)
        pred_src = f"read_parquet('{_lit(pred_glob)}', union_by_name = true)"
        p_cols = ["request_id", "ts", *base, *(features if join_features else [])]
        p_sql = ", ".join(prob_sql if c == "probabilities" else _q(c) for c in p_cols)
        if fb_glob is not None:
            # Last feedback wins: greatest ts, then the later part file (names start
            # with the epoch in ms, and DuckDB numbers the globbed files in order).
            # A struct: arg_max skips a NULL argument, and a text label has a NULL number.
            text = "label_text" if "label_text" in _describe(con, fb_glob) else "NULL::VARCHAR"
            fb_sql = f"""
                SELECT request_id,
                       arg_max({{'n': label::DOUBLE, 't': {text}}}, (ts, file_index)) AS lab,
                       max(ts) AS label_ts,
                       count(*) - 1 AS n_dup
                FROM read_parquet('{_lit(fb_glob)}', union_by_name = true)
                WHERE ts >= $start AND ts <= $fb_upper
                GROUP BY request_id"""
        else:
            fb_sql = (
                "SELECT NULL::VARCHAR AS request_id, "
                "{'n': NULL::DOUBLE, 't': NULL::VARCHAR} AS lab, "
                "NULL::TIMESTAMPTZ AS label_ts, 0::BIGINT AS n_dup WHERE false"
            )
        out_cols = ", ".join(f"p.{_q(c)}" for c in keys + (features if join_features else []))
        sql = f"""
            WITH p AS (
                SELECT {p_sql} FROM {pred_src}
                WHERE ts >= $start AND ts < $end
            ), f AS ({fb_sql})
            SELECT {out_cols}, f.lab.n AS label, f.lab.t AS label_text,
                   epoch_us(f.label_ts) / 1e6 - epoch_us(p.ts) / 1e6 AS delay_s,
                   CASE WHEN p.track <> 'shadow' THEN coalesce(f.n_dup, 0) ELSE 0 END::INTEGER
                       AS n_dup
            FROM p LEFT JOIN f USING (request_id)"""
        params: dict[str, Any] = {"start": start, "end": end}
        if fb_glob is not None:
            params["fb_upper"] = fb_upper
        try:
            table = con.sql(sql, params=params).to_arrow_table()
            served = None
            if features and not join_features:
                import pyarrow.compute as pc

                n_served = int(pc_sum(pc.not_equal(table.column("track"), "shadow")))
                keep = ""
                if max_feature_rows and n_served > max_feature_rows:
                    # A uniform sample keyed on the request id (a hash, not a random
                    # draw): the same window always gives the same rows, whatever the
                    # scan order of DuckDB's threads.
                    cut = int(SAMPLE_BUCKETS * max_feature_rows / n_served)
                    keep = (
                        f" AND hash(request_id || '{DRIFT_SAMPLE_SEED}') % {SAMPLE_BUCKETS} < {cut}"
                    )
                served = con.sql(
                    f"SELECT {', '.join(_q(c) for c in features)} FROM {pred_src} "
                    f"WHERE ts >= $start AND ts < $end AND track <> 'shadow'{keep}",
                    params={"start": start, "end": end},
                ).to_arrow_table()
        except duckdb.Error as exc:
            raise MonitoringError(f"cannot join logs of {model_name!r}: {exc}") from exc
    finally:
        con.close()
    n_dup = int(pc_sum(table.column("n_dup")))
    table = table.drop_columns(["n_dup"])
    frame = _to_pandas(table, categorical=("model_version", "track"))
    texts = frame.pop("label_text") if "label_text" in frame.columns else None
    if texts is not None and texts.notna().any():  # a text label stands where its number is null
        frame["label"] = frame["label"].astype(object).where(texts.isna(), texts)
    feats = _to_pandas(served, categorical=()) if served is not None else None
    return WindowData(frame, n_dup, feats)


def _lit(path: str) -> str:
    return path.replace("'", "''")


def _describe(con: Any, glob: str) -> set[str]:
    import duckdb

    try:
        rows = con.execute(
            "DESCRIBE SELECT * FROM read_parquet(?, union_by_name = true)", [glob]
        ).fetchall()
    except duckdb.Error as exc:
        raise MonitoringError(f"cannot read prediction log {glob}: {exc}") from exc
    return {r[0] for r in rows}


def pc_sum(column: Any) -> float:
    import pyarrow.compute as pc

    value = pc.sum(column).as_py()
    return float(value or 0)


def _to_pandas(table: Any, categorical: Sequence[str]) -> pd.DataFrame:
    """Arrow to pandas, low-cardinality strings as categoricals (no million str objects)."""
    import pyarrow as pa

    for name in categorical:
        if name in table.column_names:
            i = table.column_names.index(name)
            table = table.set_column(i, name, table.column(name).dictionary_encode())
    if table.num_rows == 0:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in table.column_names})
    return (
        table.to_pandas(split_blocks=True, self_destruct=False)
        if isinstance(table, pa.Table)
        else pd.DataFrame(table)
    )


def compute_window(
    home: Home,
    model_name: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    reference: ReferenceLike | None,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    reference_predictions: Any = None,
    baseline: Mapping[str, Mapping[str, Any]] | None = None,
    as_of: dt.datetime | None = None,
    config: MonitorConfig | None = None,
    max_label_delay: dt.timedelta | None = None,
    task: Any = None,
) -> MonitoringResult:
    """Measure one window of ``model_name``'s traffic.

    ``task``: the pipeline's ``models.tasks.Task`` (``None``: binary); it decides which
    labels are valid and which metrics are measured (``metrics.task_metrics``).

    ``reference``: the training reference for feature drift: a DataFrame of the
    training rows or a reference profile from the data gate's drift module
    (``None``: drift not computed). ``numeric``/``categorical``: the feature
    columns, as the dataset declares them. ``reference_predictions``: the
    deployed model's scores on reference rows (e.g. its holdout), for prediction
    drift: an array or profile (``drift.prediction_reference``) for every version,
    or a mapping version -> array/profile. ``baseline``: per model version, metrics at deployment
    (``{"3": {"auc": 0.77}}`` or ``{"auc": {"value": .., "se": ..}}``), the
    yardstick of label-confirmed degradation.
    """
    config = config or MonitorConfig()
    start, end = utc(start), utc(end)
    as_of = utc(as_of) if as_of is not None else dt.datetime.now(dt.UTC)
    numeric, categorical = list(numeric), list(categorical)
    data = load_window(
        home,
        model_name,
        start,
        end,
        features=[*numeric, *categorical] if reference is not None else [],
        as_of=as_of,
        max_label_delay=max_label_delay,
        max_feature_rows=config.max_drift_rows,
        with_probabilities=getattr(task, "name", "binary") == "multiclass",
    )
    return summarize(
        data,
        model_name=model_name,
        start=start,
        end=end,
        as_of=as_of,
        reference=reference,
        numeric=numeric,
        categorical=categorical,
        reference_predictions=reference_predictions,
        baseline=baseline,
        config=config,
        task=task,
    )


def summarize(
    data: WindowData,
    *,
    model_name: str,
    start: dt.datetime,
    end: dt.datetime,
    as_of: dt.datetime,
    reference: ReferenceLike | None,
    numeric: Sequence[str],
    categorical: Sequence[str],
    reference_predictions: Any = None,
    baseline: Mapping[str, Mapping[str, Any]] | None = None,
    config: MonitorConfig | None = None,
    task: Any = None,
) -> MonitoringResult:
    """The statistics of an already joined window (``compute_window`` minus the I/O)."""
    config = config or MonitorConfig()
    df = data.frame
    tracks_all = df["track"].astype(object).to_numpy() if len(df) else np.zeros(0, object)
    served_mask = tracks_all != "shadow"
    n_served = int(served_mask.sum())

    versions_out = []
    primary = None
    if len(df):
        version_codes, version_names = _factorize_versions(df["model_version"])
        label_col = df["label"]
        labels_all = (
            label_col.to_numpy(dtype=object)
            if label_col.dtype == object
            else label_col.to_numpy(dtype=np.float64)
        )
        preds_all = df["prediction"].to_numpy(dtype=np.float64)
        probs_all = (
            df["probabilities"].to_numpy(dtype=object) if "probabilities" in df.columns else None
        )
        delays_all = df["delay_s"].to_numpy(dtype=np.float64)
        for code, version in enumerate(version_names):
            mask = version_codes == code
            versions_out.append(
                _version_metrics(
                    str(version),
                    labels_all[mask],
                    preds_all[mask],
                    delays_all[mask],
                    tracks_all[mask],
                    reference_predictions,
                    (baseline or {}).get(str(version)),
                    config,
                    task,
                    probs_all[mask] if probs_all is not None else None,
                )
            )
        # the version that served most stable traffic (else most served traffic)
        stable = tracks_all == "stable"
        pick = stable if stable.any() else served_mask
        if pick.any():
            counts = np.bincount(version_codes[pick], minlength=len(version_names))
            primary = str(version_names[int(np.argmax(counts))])

    fd: DriftSummary | None = None
    if reference is not None and (numeric or categorical):
        if n_served < config.min_drift_rows:
            fd = DriftSummary(
                n_reference=0,
                n_current=n_served,
                alpha=config.drift_alpha,
                method="",
                rows=(),
                drifted=(),
                judged=False,
                note=f"not judged: {n_served} served rows < {config.min_drift_rows}",
            )
        else:
            cols = [*numeric, *categorical]
            if data.served_features is not None:
                current = data.served_features
            else:  # features were joined: one row per request and version
                current = pd.DataFrame({c: df[c].to_numpy()[served_mask] for c in cols}, copy=False)
            fd = feature_drift(
                reference,
                current,
                numeric=numeric,
                categorical=categorical,
                alpha=config.drift_alpha,
                correction=config.drift_correction,
                psi_floor=config.psi_floor,
            )
    return MonitoringResult(
        model_name=model_name,
        start=start,
        end=end,
        as_of=as_of,
        n_predictions=n_served,
        versions=tuple(versions_out),
        primary_version=primary,
        feature_drift=fd,
        config=config,
        n_duplicate_feedback=data.n_duplicate_feedback,
    )


def _probability_rows(column: np.ndarray | None, k: int) -> np.ndarray | None:
    """The logged class probabilities as an ``(n, k)`` matrix (NaN rows where a row has
    none, e.g. logged by an older server); None when no row has them."""
    if column is None:
        return None
    out = np.full((len(column), k), np.nan)
    seen = False
    for i, v in enumerate(column):
        if v is not None and not (isinstance(v, float) and np.isnan(v)) and len(v) == k:
            out[i] = v
            seen = True
    return out if seen else None


def _version_key(v: str) -> tuple[int, int, str]:
    return (0, int(v), "") if v.isdigit() else (1, 0, v)


def _factorize_versions(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes and names of the versions, names in version order ("2" < "10")."""
    codes, uniques = pd.factorize(column)
    names = [str(u) for u in uniques]
    order = sorted(range(len(names)), key=lambda i: _version_key(names[i]))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], [names[i] for i in order]


def _version_metrics(
    version: str,
    labels: np.ndarray,
    preds: np.ndarray,
    delays: np.ndarray,
    tracks: np.ndarray,
    reference_predictions: Any,
    baseline: Mapping[str, Any] | None,
    config: MonitorConfig,
    task: Any = None,
    probabilities: np.ndarray | None = None,
) -> VersionMetrics:
    has_label = ~pd.isna(labels)
    name = getattr(task, "name", "binary")
    numbers = pd.to_numeric(pd.Series(labels, dtype=object), errors="coerce").to_numpy(float)
    live = preds  # what prediction drift compares: one number per row, or class probabilities
    rate = None
    if name == "multiclass":
        valid = has_label.copy()
        valid[has_label] = ~task.check_labels(labels[has_label]).bad
        k = len(task.classes)
        probs = _probability_rows(probabilities, k)
        if probs is not None:
            live = probs
        scored = valid & ~np.isnan(probs[:, 0]) if probs is not None else np.zeros_like(valid)
        metrics = {}
        if probs is not None and scored.any():
            from mlcicd_dagster.monitoring.metrics import task_metrics

            y = task.encode(labels[scored])
            metrics = task_metrics(task, y, probs[scored], level=config.level)
        n_labeled = int(valid.sum())
    else:
        if name == "regression":
            valid = has_label & np.isfinite(numbers)
        else:
            valid = has_label & ((numbers == 0) | (numbers == 1))
        y, p = numbers[valid], preds[valid]
        if name == "regression":
            from mlcicd_dagster.monitoring.metrics import task_metrics

            metrics = task_metrics(task, y, p, level=config.level)
        else:
            metrics = classification_metrics(y, p, threshold=config.threshold, level=config.level)
        n_labeled = int(valid.sum())
        rate = float(y.mean()) if n_labeled else None
    n = int(labels.size)
    delay = None
    if has_label.any():
        d = delays[has_label]
        p50, p90 = np.percentile(d, [50, 90])
        delay = {"p50": float(p50), "p90": float(p90), "max": float(d.max())}
    pdrift = None
    reference_predictions = for_version(reference_predictions, version)
    if reference_predictions is not None:
        if n < config.min_drift_rows:
            pdrift = DriftSummary(
                0,
                n,
                config.drift_alpha,
                "",
                (),
                (),
                False,
                f"not judged: {n} rows < {config.min_drift_rows}",
            )
        else:
            sample = live
            if config.max_drift_rows and n > config.max_drift_rows:
                # sorted first: the sample must not depend on the order rows arrived in
                rng = np.random.default_rng(DRIFT_SAMPLE_SEED)
                order = np.lexsort(live.T[::-1]) if live.ndim == 2 else np.argsort(live)
                sample = live[order][rng.choice(n, config.max_drift_rows, replace=False)]
            pdrift = prediction_drift(
                reference_predictions,
                sample,
                alpha=config.drift_alpha,
                correction=config.drift_correction,
                psi_floor=config.psi_floor,
            )
    return VersionMetrics(
        version=version,
        tracks=tuple(sorted({str(t) for t in np.unique(tracks)})),
        n_predictions=n,
        n_labeled=n_labeled,
        n_invalid_labels=int((has_label & ~valid).sum()),
        label_coverage=n_labeled / n if n else 0.0,
        label_delay_s=delay,
        mean_prediction=float(preds.mean()) if n else float("nan"),
        label_rate=rate,
        metrics=metrics,
        baseline=baseline,
        prediction_drift=pdrift,
    )
