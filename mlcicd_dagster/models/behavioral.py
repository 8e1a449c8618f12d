"""Behavioral tests (CheckList style) read from a YAML file beside the dataset.

Three kinds, each run on a fixed sample of trusted rows:

* ``invariance``: change a field that should not matter and measure how far each
  row's score moves.
* ``directional``: change a field in a direction with a known effect (e.g. one
  more month of payment delay); a row *violates* when its score moves the other way
  by more than ``tolerance``.
* ``minimum_functionality``: rows selected by ``where`` (or given ``rows``)
  must get scores meeting ``expect`` (a specification of the domain, judged as such).

Against a champion, invariance and directional tests are judged *relative to it*, with
a paired statistic on the same rows and the same changes: per row, the candidate's
|score change| (or violation) minus the champion's. The candidate fails only when the
one-sided ``1 - alpha`` lower bound of the mean paired difference is above the test's
margin (``margin``: how much more sensitive than the champion is tolerated; invariance
default 0.01, directional default ``max_violation_rate``). So an equally sensitive
candidate fails with probability at most ``alpha`` (in fact far less: the design rate
``Phi(z_{1-alpha} - margin / se)`` is in the table), and whatever the champion already
does is not held against the candidate. The first model (no champion) is held to the
absolute limits (``max_mean_abs_change``, ``max_abs_change``, ``max_violation_rate``).
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
    """P(an equally sensitive candidate fails this test), at the measured spread."""


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


def test_margin(kind: str, test: dict[str, Any]) -> float:
    """How much worse than the champion a test tolerates (its ``margin``, else a default:
    invariance 0.01 of mean |score change|; directional 0.01 of violation rate, at least
    ``max_violation_rate``)."""
    if "margin" in test:
        return float(test["margin"])
    if kind == "invariance":
        return 0.01
    return max(float(test.get("max_violation_rate", 0.0)), 0.01)


def _paired(
    cand: np.ndarray, champ: np.ndarray, margin: float, alpha: float
) -> tuple[bool, float, float, float]:
    """(passed, mean paired difference, its lower bound, design false rejection)."""
    from mlcicd_dagster.models import stats

    est = stats.paired_mean_diff(cand, champ, alpha)
    fr = stats.design_false_rejection(est.se, margin, alpha)
    return bool(est.lower <= margin), est.estimate, est.lower, fr


def run_behavioral(
    predictor: Predictor,
    rows: pd.DataFrame,
    spec: dict[str, Any],
    champion: Predictor | None = None,
    alpha: float = 0.05,
) -> list[BehavioralOutcome]:
    """Run every test in ``spec`` on a fixed sample of ``rows`` (against ``champion``
    when given: paired, relative; else against the absolute limits)."""
    n = int(spec.get("sample_rows", DEFAULT_SAMPLE_ROWS))
    sample = rows.sample(n=min(n, len(rows)), random_state=SAMPLE_SEED).reset_index(drop=True)
    models = {"candidate": predictor}
    if champion is not None:
        models["champion"] = champion
    base = {k: m.predict_proba(sample) for k, m in models.items()}
    out: list[BehavioralOutcome] = []
    for t in spec.get("invariance") or []:
        name = t.get("name", "invariance")
        changed = _apply(sample, t["change"], name)
        delta = {k: np.abs(m.predict_proba(changed) - base[k]) for k, m in models.items()}
        d = delta["candidate"]
        value = f"mean |d|={d.mean():.4f}, max |d|={d.max():.4f}"
        if champion is not None:
            margin = test_margin("invariance", t)
            ok, diff, lower, fr = _paired(d, delta["champion"], margin, alpha)
            value += f"; champion mean |d|={delta['champion'].mean():.4f}"
            out.append(
                BehavioralOutcome(
                    "invariance",
                    name,
                    ok,
                    value + f"; paired diff {diff:+.4f} (lower bound {lower:+.4f})",
                    f"not more sensitive than the champion by > {margin} (one-sided "
                    f"{1 - alpha:.0%})",
                    len(sample),
                    fr,
                )
            )
            continue
        mean_max = float(t.get("max_mean_abs_change", 0.01))
        row_max = float(t.get("max_abs_change", 1.0))
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
                drop = sign * (base[k] - m.predict_proba(moved_rows))  # > 0: the wrong way
                viol[k].append((drop > tol).astype(np.float64))
                if k == "candidate":
                    worst = max(worst, float(drop.max()))
        vc = np.concatenate(viol["candidate"])
        total = len(vc)
        value = f"violations={int(vc.sum())}/{total} (worst {max(worst, 0):.2e})"
        if champion is not None:
            vh = np.concatenate(viol["champion"])
            margin = test_margin("directional", t)
            if vc.std() == 0 and vh.std() == 0 and (vc - vh).std() == 0:
                ok, diff, fr = (
                    bool(vc.mean() - vh.mean() <= margin),
                    float(vc.mean() - vh.mean()),
                    0.0,
                )
                lower = diff
            else:
                ok, diff, lower, fr = _paired(vc, vh, margin, alpha)
            out.append(
                BehavioralOutcome(
                    "directional",
                    name,
                    ok,
                    value + f"; champion {int(vh.sum())}/{total}; paired diff {diff:+.4f} "
                    f"(lower bound {lower:+.4f})",
                    f"{expect}: violation rate not above the champion's by > {margin} "
                    f"(one-sided {1 - alpha:.0%}), tol {tol:g}",
                    total,
                    fr,
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
