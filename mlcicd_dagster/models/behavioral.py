"""Behavioral tests (CheckList style) read from a YAML file beside the dataset.

Three kinds, each run on a fixed sample of trusted rows:

* ``invariance``: change a field that should not matter; the score may move at
  most ``max_mean_abs_change`` on average and ``max_abs_change`` on any row.
* ``directional``: change a field in a direction with a known effect (e.g. one
  more month of payment delay); the score must move that way on every row
  (violations above ``tolerance`` counted, at most ``max_violation_rate``).
* ``minimum_functionality``: rows selected by ``where`` (or given ``rows``)
  must get scores meeting ``expect``.

These are deterministic specifications, not statistical tests: a failure is a
property violated on the sample, with the offending numbers in the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlcicd_dagster.models.predictor import Predictor

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


def load_spec(path: str | Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(Path(path).read_text()) or {}
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
    "ge": np.greater_equal,
    "gt": np.greater,
    "le": np.less_equal,
    "lt": np.less,
    "eq": np.equal,
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


def run_behavioral(
    predictor: Predictor, rows: pd.DataFrame, spec: dict[str, Any]
) -> list[BehavioralOutcome]:
    """Run every test in ``spec`` on a fixed sample of ``rows``."""
    n = int(spec.get("sample_rows", DEFAULT_SAMPLE_ROWS))
    sample = rows.sample(n=min(n, len(rows)), random_state=SAMPLE_SEED).reset_index(drop=True)
    base = predictor.predict_proba(sample)
    out: list[BehavioralOutcome] = []
    for t in spec.get("invariance") or []:
        name = t.get("name", "invariance")
        changed = predictor.predict_proba(_apply(sample, t["change"], name))
        delta = np.abs(changed - base)
        mean_max = float(t.get("max_mean_abs_change", 0.01))
        row_max = float(t.get("max_abs_change", 1.0))
        ok = delta.mean() <= mean_max and delta.max() <= row_max
        out.append(
            BehavioralOutcome(
                "invariance",
                name,
                bool(ok),
                f"mean |d|={delta.mean():.4f}, max |d|={delta.max():.4f}",
                f"mean <= {mean_max}, max <= {row_max}",
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
        violations = 0
        total = 0
        worst = 0.0
        for f in fields_:
            change = {f: t["change"]} if f is not None else t["change"]
            moved = predictor.predict_proba(_apply(sample, change, name))
            drop = sign * (base - moved)  # > 0 means it moved the wrong way
            violations += int((drop > tol).sum())
            total += len(sample)
            worst = max(worst, float(drop.max()))
        rate = violations / max(total, 1)
        out.append(
            BehavioralOutcome(
                "directional",
                name,
                rate <= max_rate,
                f"violations={violations}/{total} (worst {max(worst, 0):.2e})",
                f"{expect}, rate <= {max_rate}, tol {tol:g}",
                total,
            )
        )
    for t in spec.get("minimum_functionality") or []:
        name = t.get("name", "minimum_functionality")
        if "rows" in t:
            cases = pd.DataFrame(t["rows"])
        else:
            cases = _select(rows, t.get("where") or {}, name)
        if len(cases) == 0:
            out.append(
                BehavioralOutcome("minimum_functionality", name, False, "no rows", "rows", 0)
            )
            continue
        ok, value = _check_expect(predictor.predict_proba(cases), t.get("expect") or {}, name)
        expectation = ", ".join(f"{k} {v}" for k, v in (t.get("expect") or {}).items())
        out.append(
            BehavioralOutcome("minimum_functionality", name, ok, value, expectation, len(cases))
        )
    return out
