"""Behavioral tests (CheckList style) read from a YAML file beside the dataset.

Three kinds, each run on a fixed sample of trusted rows:

* ``invariance``: change a field that should not matter and measure how far each
  row's score moves.
* ``directional``: change a field in a direction with a known effect (e.g. one
  more month of payment delay); a row *violates* when its score moves the other way
  by more than ``tolerance``.
* ``minimum_functionality``: rows selected by ``where`` (or given ``rows``)
  must get scores meeting ``expect`` (a specification of the domain, judged as such).

The "score" is the task's output (``Predictor.predict``): P(positive) for a binary
task, the prediction (in the label's units) for a regression, the class probabilities
for a multiclass task. There a row's change is the total-variation distance between
its two probability vectors (half the sum of |change| over classes, in [0, 1]); a
directional or minimum-functionality test names the ``class:`` whose probability it
judges. ``where:`` may select rows on the label too (e.g. images labelled 0).

Against a champion, invariance and directional tests are judged *relative to it*, with
a paired statistic on the same rows and the same changes: per row, the candidate's
|score change| (or violation) minus the champion's; the test's statistic ``D`` is their
mean. The candidate fails only when the one-sided ``1 - alpha`` lower bound of ``D``
(row-sampling SE) is above the test's ``margin`` (how much more sensitive than the
champion is tolerated; default 0.01 for probabilities; a regression test must state
it, in the label's units).

Two honest retrains differ in sensitivity by more than row sampling says: ``D`` varies
from retrain to retrain with an SD (``retrain_sd``, per test, measured on honest
retrains of real batches by ``bench/bench_gate_simulation.py``) that the row-sampling
SE does not cover. Each paired test states its false-rejection rate both ways
(``design_rates``): an equally sensitive candidate fails with probability
``P(D - z se > margin)``, ``D ~ N(0, se^2)`` (rows only) and ``D ~ N(0, se^2 +
retrain_sd^2)`` (rows and retrains); the gates' design uses the second, so a margin
too small for the measured retrain spread is refused when the pipeline loads, with
the margin that would do. The first model (no champion) is held to the absolute
limits (``max_mean_abs_change``, ``max_abs_change``, ``max_violation_rate``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlcicd_dagster.platform import yamlio
from mlcicd_dagster.platform.lazy import lazy

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlcicd_dagster.models.predictor import Predictor
else:
    np = lazy("numpy")
    pd = lazy("pandas")


DEFAULT_SAMPLE_ROWS = 500
SAMPLE_SEED = 20240601
"""Fixed seed: the same rows are used for every model, so results are comparable."""


class BehavioralSpecError(ValueError):
    """The behavioral YAML is malformed (message names the test)."""


@dataclass(frozen=True)
class BehavioralOutcome:
    kind: str
    name: str
    passed: bool
    value: str
    expectation: str
    rows: int
    design_false_rejection: float | None = None
    """P(an equally sensitive candidate fails this test), at the measured row-sampling SE
    and the test's ``retrain_sd`` (rows and retrains)."""
    design_false_rejection_rows: float | None = None
    """The same, from row sampling alone (as if two retrains were equally sensitive)."""
    statistic: float | None = None
    """Paired tests: ``D``, the mean paired difference candidate - champion."""
    se: float | None = None
    """Paired tests: the row-sampling SE of ``D``."""


def load_spec(path: str | Path) -> dict[str, Any]:
    try:
        spec = yamlio.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BehavioralSpecError(f"cannot read behavioral tests {path}: {exc}") from exc
    if not isinstance(spec, dict):
        raise BehavioralSpecError(f"{path}: expected a mapping at top level")
    unknown = set(spec) - {"sample_rows", "invariance", "directional", "minimum_functionality"}
    if unknown:
        raise BehavioralSpecError(f"{path}: unknown key(s) {sorted(unknown)}")
    return spec


def _apply(frame: pd.DataFrame, change: dict[str, Any], name: str) -> pd.DataFrame:
    out = frame.copy()
    for col, op in change.items():
        if col not in out.columns:
            raise BehavioralSpecError(f"{name}: unknown field {col!r}")
        if not isinstance(op, dict) or len(set(op) - {"clip"}) != 1:
            raise BehavioralSpecError(f"{name}: {col}: give exactly one of swap/set/add")
        if "swap" in op:
            a, b = op["swap"]
            values = out[col].to_numpy()
            out[col] = np.where(values == a, b, np.where(values == b, a, values))
        elif "set" in op:
            out[col] = op["set"]
        elif "add" in op:
            out[col] = out[col].astype(np.float64) + float(op["add"])
        else:
            raise BehavioralSpecError(f"{name}: {col}: unknown operation {sorted(op)}")
        if "clip" in op:
            lo, hi = op["clip"]
            out[col] = out[col].clip(lo, hi)
    return out


_OPS = {
    "ge": operator.ge,
    "gt": operator.gt,
    "le": operator.le,
    "lt": operator.lt,
    "eq": operator.eq,
}


def _select(frame: pd.DataFrame, where: dict[str, Any], name: str) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for col, cond in where.items():
        if col not in frame.columns:
            raise BehavioralSpecError(f"{name}: unknown field {col!r} in where")
        conds = cond if isinstance(cond, dict) else {"eq": cond}
        for op, value in conds.items():
            if op not in _OPS:
                raise BehavioralSpecError(f"{name}: unknown comparison {op!r}")
            mask &= _OPS[op](frame[col].to_numpy(), value)
    return frame[mask]


def _check_expect(scores: np.ndarray, expect: dict[str, float], name: str) -> tuple[bool, str]:
    ok = True
    parts = []
    for key, bound in expect.items():
        if key == "mean_score_ge":
            v = float(scores.mean())
            ok &= v >= bound
        elif key == "mean_score_le":
            v = float(scores.mean())
            ok &= v <= bound
        elif key == "score_ge":
            v = float(scores.min())
            ok &= v >= bound
        elif key == "score_le":
            v = float(scores.max())
            ok &= v <= bound
        else:
            raise BehavioralSpecError(f"{name}: unknown expectation {key!r}")
        parts.append(f"{key.replace('_ge', '').replace('_le', '')}={v:.4f}")
    return bool(ok), ", ".join(parts)


def test_margin(kind: str, test: dict[str, Any], task: str = "binary") -> float:
    """How much worse than the champion a test tolerates (its ``margin``, else a default:
    invariance 0.01 of mean |score change| (or total variation); directional 0.01 of
    violation rate, at least ``max_violation_rate``). A regression invariance test must
    state its margin: it is in the label's units."""
    if "margin" in test:
        return float(test["margin"])
    if kind == "invariance":
        if task == "regression":
            raise BehavioralSpecError(
                f"{test.get('name', kind)}: a regression invariance test needs `margin:` "
                "(in the label's units)"
            )
        return 0.01
    return max(float(test.get("max_violation_rate", 0.0)), 0.01)


def retrain_sd(test: dict[str, Any]) -> float:
    """The test's ``retrain_sd``: SD of its paired statistic between honest retrains."""
    value = float(test.get("retrain_sd", 0.0))
    if value < 0:
        raise BehavioralSpecError(f"{test.get('name')}: retrain_sd must be >= 0")
    return value


def design_rates(se: float, margin: float, alpha: float, between_sd: float) -> tuple[float, float]:
    """(rows and retrains, rows only): P(an equally sensitive candidate fails)."""
    from mlcicd_dagster.models import stats

    return (
        stats.paired_lower_false_rejection(se, margin, alpha, between_sd),
        stats.paired_lower_false_rejection(se, margin, alpha, 0.0),
    )


def _paired(
    cand: np.ndarray, champ: np.ndarray, margin: float, alpha: float, between_sd: float
) -> tuple[bool, Any, float, float]:
    """(passed, estimate, rate with retrains, rate rows only)."""
    from mlcicd_dagster.models import stats

    est = stats.paired_mean_diff(cand, champ, alpha)
    fr, fr_rows = design_rates(est.se, margin, alpha, between_sd)
    return bool(est.lower <= margin), est, fr, fr_rows


def _output(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """The task's output: P(positive) (binary), the prediction, or class probabilities."""
    fn = getattr(model, "predict", None) or model.predict_proba
    return np.asarray(fn(frame), dtype=np.float64)


def _row_change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: |change| of a score, or the total-variation distance of class probabilities."""
    d = np.abs(a - b)
    return d if d.ndim == 1 else 0.5 * d.sum(axis=1)


def _class_column(out: np.ndarray, model: Any, test: dict[str, Any], name: str) -> np.ndarray:
    """One score per row: the output itself, or the probability of the test's ``class:``."""
    if out.ndim == 1:
        return out
    if "class" not in test:
        raise BehavioralSpecError(
            f"{name}: the model outputs {out.shape[1]} class probabilities: give `class:` "
            "(whose probability the test judges)"
        )
    task = getattr(model, "task", None)
    try:
        index = int(task.encode([test["class"]])[0]) if task is not None else int(test["class"])
    except Exception as exc:  # noqa: BLE001 - a spec error, named
        raise BehavioralSpecError(f"{name}: class {test['class']!r}: {exc}") from exc
    if not 0 <= index < out.shape[1]:
        raise BehavioralSpecError(f"{name}: class {test['class']!r} is not an output column")
    return out[:, index]


def run_behavioral(
    predictor: Predictor,
    rows: pd.DataFrame,
    spec: dict[str, Any],
    champion: Predictor | None = None,
    alpha: float = 0.05,
    label: str | None = None,
) -> list[BehavioralOutcome]:
    """Run every test in ``spec`` on a fixed sample of ``rows`` (against ``champion``
    when given: paired, relative; else against the absolute limits). ``label``: the
    label column of ``rows``, if present: ``where:`` may select on it; it is never
    scored."""
    task = getattr(getattr(predictor, "task", None), "name", "binary")
    features = rows.drop(columns=[label]) if label is not None and label in rows else rows
    n = int(spec.get("sample_rows", DEFAULT_SAMPLE_ROWS))
    sample = features.sample(n=min(n, len(features)), random_state=SAMPLE_SEED)
    sample = sample.reset_index(drop=True)
    models: dict[str, Any] = {"candidate": predictor}
    if champion is not None:
        models["champion"] = champion
    base = {k: _output(m, sample) for k, m in models.items()}
    out: list[BehavioralOutcome] = []

    def paired(
        kind: str,
        t: dict[str, Any],
        name: str,
        vc: Any,
        vh: Any,
        value: str,
        expectation: str,
        total: int,
    ) -> BehavioralOutcome:
        margin = test_margin(kind, t, task)
        ok, est, fr, fr_rows = _paired(vc, vh, margin, alpha, retrain_sd(t))
        return BehavioralOutcome(
            kind,
            name,
            ok,
            value + f"; paired diff {est.estimate:+.4g} (lower bound {est.lower:+.4g})",
            expectation.format(margin=margin, level=f"{1 - alpha:.0%}"),
            total,
            fr,
            fr_rows,
            float(est.estimate),
            float(est.se),
        )

    for t in spec.get("invariance") or []:
        name = t.get("name", "invariance")
        changed = _apply(sample, t["change"], name)
        delta = {k: _row_change(_output(m, changed), base[k]) for k, m in models.items()}
        d = delta["candidate"]
        what = "|d|" if d.ndim == base["candidate"].ndim else "TV"
        value = f"mean {what}={d.mean():.4g}, max {what}={d.max():.4g}"
        if champion is not None:
            out.append(
                paired(
                    "invariance",
                    t,
                    name,
                    d,
                    delta["champion"],
                    value + f"; champion mean {what}={delta['champion'].mean():.4g}",
                    "not more sensitive than the champion by > {margin} (one-sided {level})",
                    len(sample),
                )
            )
            continue
        if task == "regression" and "max_mean_abs_change" not in t:
            raise BehavioralSpecError(
                f"{name}: a regression invariance test needs `max_mean_abs_change:` for the "
                "first model (in the label's units)"
            )
        mean_max = float(t.get("max_mean_abs_change", 0.01))
        row_max = float(t.get("max_abs_change", float("inf") if task == "regression" else 1.0))
        ok = d.mean() <= mean_max and d.max() <= row_max
        out.append(
            BehavioralOutcome(
                "invariance",
                name,
                bool(ok),
                value,
                f"mean <= {mean_max}, max <= {row_max} (first model: absolute)",
                len(sample),
            )
        )
    for t in spec.get("directional") or []:
        name = t.get("name", "directional")
        expect = t.get("expect", "non_decreasing")
        if expect not in ("non_decreasing", "non_increasing"):
            raise BehavioralSpecError(f"{name}: expect must be non_decreasing or non_increasing")
        sign = 1.0 if expect == "non_decreasing" else -1.0
        tol = float(t.get("tolerance", 1e-9))
        max_rate = float(t.get("max_violation_rate", 0.0))
        fields_ = t.get("for_each") or [None]
        viol: dict[str, list[np.ndarray]] = {k: [] for k in models}
        worst = 0.0
        for f in fields_:
            change = {f: t["change"]} if f is not None else t["change"]
            moved_rows = _apply(sample, change, name)
            for k, m in models.items():
                before = _class_column(base[k], m, t, name)
                after = _class_column(_output(m, moved_rows), m, t, name)
                drop = sign * (before - after)  # > 0: the wrong way
                viol[k].append((drop > tol).astype(np.float64))
                if k == "candidate":
                    worst = max(worst, float(drop.max()))
        vc = np.concatenate(viol["candidate"])
        total = len(vc)
        value = f"violations={int(vc.sum())}/{total} (worst {max(worst, 0):.2e})"
        if champion is not None:
            vh = np.concatenate(viol["champion"])
            out.append(
                paired(
                    "directional",
                    t,
                    name,
                    vc,
                    vh,
                    value + f"; champion {int(vh.sum())}/{total}",
                    f"{expect}: violation rate not above the champion's by > {{margin}} "
                    f"(one-sided {{level}}), tol {tol:g}",
                    total,
                )
            )
            continue
        rate = float(vc.mean()) if total else 0.0
        out.append(
            BehavioralOutcome(
                "directional",
                name,
                rate <= max_rate,
                value,
                f"{expect}, rate <= {max_rate}, tol {tol:g} (first model: absolute)",
                total,
            )
        )
    for t in spec.get("minimum_functionality") or []:
        name = t.get("name", "minimum_functionality")
        if "rows" in t:
            cases = pd.DataFrame(t["rows"])
        else:
            cases = _select(rows, t.get("where") or {}, name)
            if label is not None and label in cases:
                cases = cases.drop(columns=[label])
        if len(cases) == 0:
            out.append(
                BehavioralOutcome("minimum_functionality", name, False, "no rows", "rows", 0)
            )
            continue
        scores = _class_column(_output(predictor, cases), predictor, t, name)
        ok, value = _check_expect(scores, t.get("expect") or {}, name)
        expectation = ", ".join(f"{k} {v}" for k, v in (t.get("expect") or {}).items())
        if "class" in t:
            expectation = f"P(class {t['class']}): {expectation}"
        out.append(
            BehavioralOutcome("minimum_functionality", name, ok, value, expectation, len(cases))
        )
    return out
