"""Drift and skew of a batch against the training reference, with a controlled false-alarm rate.

Per feature
-----------
* numeric: two-sample Kolmogorov-Smirnov test (p-value) and PSI over the
  reference's quantile bins (effect size);
* categorical: two-sample chi-square test on the 2 x k table reference-vs-current
  (categories with an expected count below 5 are pooled, categories unseen in the
  reference form their own cell) and PSI over the categories (effect size);
* label: the same chi-square test, with the largest absolute change of a class
  proportion as effect size.

A feature *drifts* when its multiplicity-adjusted p-value is below ``alpha`` **and**
its effect is at least the floor (``psi_floor`` for features, ``label_floor`` for the
label): with a large batch every tiny shift is "significant", the floor keeps such
shifts from raising an alarm. The report *alarms* when any feature drifts.

What error rate this controls
-----------------------------
Null hypothesis: the batch's rows are drawn from the same distribution as the
reference sample, independently of it. Under it, with ``correction="holm"``
(default) the probability that the report alarms is at most ``alpha`` (Holm
controls the family-wise error rate for any dependence between features; the
effect floor only removes alarms). With ``correction="bh"`` the false-discovery
rate is controlled; under the global null FDR equals the probability of any
alarm, so the same bound holds when the tests are positively dependent (PRDS).
KS p-values are conservative for discrete columns (ties), chi-square p-values are
asymptotic (hence the pooling of sparse cells). The reference for KS is a random
subsample of at most ``max_sample`` values, which keeps the test valid (it is still a
sample of the reference distribution). tests/data/test_drift.py checks the rate by
simulation (200 null batches, binomial bound) and checks power on a real shift.

Speed: :meth:`ReferenceProfile.from_frame` precomputes bins, proportions and sorted
samples once; :meth:`ReferenceProfile.compare` is a few vectorised passes per
feature, so the monitoring engineer can run it on live traffic windows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The rules (read when the code location loads) live in a light module; re-exported here.
from mlcicd_dagster.data.drift_rules import (  # noqa: F401
    DEFAULT_LABEL_FLOOR,
    DEFAULT_MIN_ROWS,
    DEFAULT_PSI_FLOOR,
    DriftRules,
)
from mlcicd_dagster.models import stats
from mlcicd_dagster.models.stats import adjust_pvalues

_RARE = "__rare__"
_UNSEEN = "__unseen__"


@dataclass
class NumericRef:
    edges: np.ndarray  # inner bin edges (sorted, unique); bins are (-inf, e0], (e0, e1], ...
    props: np.ndarray  # reference proportion per bin
    sample: np.ndarray  # sorted reference sample for KS
    n: int


@dataclass
class CategoricalRef:
    categories: list[Any]
    counts: np.ndarray
    n: int


@dataclass
class DriftRow:
    feature: str
    kind: str  # numeric | categorical | label
    test: str
    statistic: float | None
    p_value: float | None
    p_adjusted: float | None
    effect: float | None  # PSI, or the label's largest proportion change
    effect_name: str
    floor: float
    drifted: bool
    n_reference: int
    n_current: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


@dataclass
class DriftReport:
    rows: list[DriftRow]
    alpha: float
    correction: str
    block_on: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[DriftRow]:
        return [r for r in self.rows if r.drifted]

    @property
    def alarm(self) -> bool:
        return bool(self.drifted)

    @property
    def blocking(self) -> bool:
        """True when a feature named in ``block_on`` drifted (an ERROR, not a WARN)."""
        return any(r.feature in self.block_on for r in self.drifted)

    @property
    def severity(self) -> str:
        return "ERROR" if self.blocking else ("WARN" if self.alarm else "OK")

    def summary(self) -> str:
        if not self.alarm:
            return f"no drift ({len(self.rows)} features, {self.correction} at alpha={self.alpha})"
        names = ", ".join(f"{r.feature} ({r.effect_name}={r.effect:.3f})" for r in self.drifted)
        return f"drift {self.severity}: {names}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "alarm": self.alarm,
            "blocking": self.blocking,
            "severity": self.severity,
            "summary": self.summary(),
            "alpha": self.alpha,
            "correction": self.correction,
            "rows": [r.to_dict() for r in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_metadata(self) -> dict[str, Any]:
        import dagster as dg

        def f(x: float | None) -> float:
            return float("nan") if x is None else round(float(x), 6)

        schema = dg.TableSchema(
            columns=[
                dg.TableColumn("feature", "string"),
                dg.TableColumn("kind", "string"),
                dg.TableColumn("drifted", "bool"),
                dg.TableColumn("test", "string"),
                dg.TableColumn("p_adjusted", "float"),
                dg.TableColumn("effect", "float"),
                dg.TableColumn("effect_name", "string"),
                dg.TableColumn("floor", "float"),
                dg.TableColumn("n_current", "int"),
                dg.TableColumn("note", "string"),
            ]
        )
        ordered = sorted(self.rows, key=lambda r: (not r.drifted, r.p_adjusted or 1.0))
        records = [
            dg.TableRecord(
                {
                    "feature": r.feature,
                    "kind": r.kind,
                    "drifted": r.drifted,
                    "test": r.test,
                    "p_adjusted": f(r.p_adjusted),
                    "effect": f(r.effect),
                    "effect_name": r.effect_name,
                    "floor": r.floor,
                    "n_current": r.n_current,
                    "note": r.note,
                }
            )
            for r in ordered
        ]
        return {
            "drift_summary": dg.MetadataValue.text(self.summary()),
            "drift": dg.MetadataValue.table(records=records, schema=schema),
            "drift_alarm": dg.MetadataValue.bool(self.alarm),
            "drifted_features": dg.MetadataValue.int(len(self.drifted)),
        }


# ---------------------------------------------------------------------------


def _midpoint_edges(v: np.ndarray, bins: int) -> np.ndarray:
    """Quantile bin edges moved to midpoints between adjacent distinct values.

    Real columns are lumpy (credit limits of exactly 50,000): an edge sitting on an
    atom would let a shift of 1 unit move the whole atom to the next bin and inflate
    PSI. Midpoints make the bins robust to shifts smaller than half the gap.
    """
    distinct = np.unique(v)
    if distinct.size < 2:
        return np.empty(0)
    q = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
    pos = np.searchsorted(distinct, q, side="right")  # first distinct value > edge
    pos = pos[(pos > 0) & (pos < distinct.size)]
    return np.unique((distinct[pos - 1] + distinct[pos]) / 2.0)


def _cat_counts(ref: CategoricalRef, values: pd.Series) -> np.ndarray:
    """Current counts aligned on the reference categories, plus one 'unseen' cell."""
    vc = values.dropna().value_counts()
    aligned = vc.reindex(ref.categories, fill_value=0).to_numpy(dtype=float)
    unseen = float(vc.sum() - aligned.sum())
    return np.append(aligned, unseen)


@dataclass
class ReferenceProfile:
    """Precomputed summary of the training reference: compare batches against it quickly."""

    numeric: dict[str, NumericRef]
    categorical: dict[str, CategoricalRef]
    label: str | None = None
    label_ref: CategoricalRef | None = None

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        numeric: Iterable[str] = (),
        categorical: Iterable[str] = (),
        label: str | None = None,
        bins: int = 10,
        max_sample: int = 20_000,
        seed: int = 0,
    ) -> ReferenceProfile:
        rng = np.random.default_rng(seed)
        num: dict[str, NumericRef] = {}
        for c in numeric:
            v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if v.size == 0:
                raise ValueError(f"reference column {c!r} has no finite values")
            edges = _midpoint_edges(v, bins)
            idx = np.searchsorted(edges, v, side="left")
            props = np.bincount(idx, minlength=edges.size + 1) / v.size
            sample = v if v.size <= max_sample else rng.choice(v, max_sample, replace=False)
            num[c] = NumericRef(edges, props, np.sort(sample), int(v.size))
        cat: dict[str, CategoricalRef] = {}
        for c in categorical:
            cat[c] = cls._cat_ref(df[c])
        return cls(num, cat, label, cls._cat_ref(df[label]) if label else None)

    @staticmethod
    def _cat_ref(s: pd.Series) -> CategoricalRef:
        vc = s.dropna().value_counts()
        return CategoricalRef(list(vc.index), vc.to_numpy(dtype=float), int(vc.sum()))

    # -- persistence -------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write to ``path`` (an ``.npz``; categories kept as JSON inside)."""
        from mlcicd_dagster.platform.atomic import atomic_write_with

        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"label": self.label, "numeric": {}, "categorical": {}}
        for i, (c, r) in enumerate(self.numeric.items()):
            arrays[f"n{i}_edges"], arrays[f"n{i}_props"], arrays[f"n{i}_sample"] = (
                r.edges,
                r.props,
                r.sample,
            )
            meta["numeric"][c] = {"i": i, "n": r.n}
        cats = dict(self.categorical)
        if self.label_ref is not None and self.label:
            meta["label_i"] = len(cats)
        cat_items: list[tuple[str, CategoricalRef]] = list(cats.items())
        if self.label_ref is not None and self.label:
            cat_items.append((self.label, self.label_ref))
        for i, (cname, cref) in enumerate(cat_items):
            arrays[f"c{i}_counts"] = cref.counts
            entry = {"i": i, "n": cref.n, "categories": [_py(x) for x in cref.categories]}
            if cname == self.label and i == meta.get("label_i"):
                meta["label_ref"] = entry
            else:
                meta["categorical"][cname] = entry
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

        def _w(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]

        atomic_write_with(Path(path), _w)

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            num = {
                c: NumericRef(
                    z[f"n{m['i']}_edges"], z[f"n{m['i']}_props"], z[f"n{m['i']}_sample"], m["n"]
                )
                for c, m in meta["numeric"].items()
            }
            cat = {
                c: CategoricalRef(m["categories"], z[f"c{m['i']}_counts"], m["n"])
                for c, m in meta["categorical"].items()
            }
            lab = meta.get("label_ref")
            label_ref = (
                CategoricalRef(lab["categories"], z[f"c{lab['i']}_counts"], lab["n"])
                if lab
                else None
            )
        return cls(num, cat, meta.get("label"), label_ref)

    # -- comparison --------------------------------------------------------------
    def compare(
        self,
        current: pd.DataFrame,
        *,
        alpha: float = 0.05,
        correction: str = "holm",
        psi_floor: float = DEFAULT_PSI_FLOOR,
        label_floor: float = DEFAULT_LABEL_FLOOR,
        min_rows: int = DEFAULT_MIN_ROWS,
        block_on: Iterable[str] = (),
    ) -> DriftReport:
        from scipy.stats import ks_2samp

        rows: list[DriftRow] = []
        for c, ref in self.numeric.items():
            if c not in current.columns:
                rows.append(self._missing(c, "numeric", "ks", "psi", psi_floor, ref.n))
                continue
            v = pd.to_numeric(current[c], errors="coerce").to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if v.size < min_rows:
                rows.append(
                    DriftRow(c, "numeric", "ks", None, None, None, None, "psi", psi_floor,
                             False, ref.n, int(v.size), f"fewer than {min_rows} values")
                )  # fmt: skip
                continue
            idx = np.searchsorted(ref.edges, v, side="left")
            cur_props = np.bincount(idx, minlength=ref.edges.size + 1) / v.size
            ks = ks_2samp(ref.sample, v, method="asymp")
            rows.append(
                DriftRow(c, "numeric", "ks", float(ks.statistic), float(ks.pvalue), None,
                         stats.psi(ref.props, cur_props), "psi", psi_floor, False, ref.n,
                         int(v.size))
            )  # fmt: skip
        cats = list(self.categorical.items())
        if self.label and self.label_ref is not None:
            cats.append((self.label, self.label_ref))
        for c, cref in cats:
            is_label = c == self.label and cref is self.label_ref
            kind = "label" if is_label else "categorical"
            effect_name = "max_abs_prop_change" if is_label else "psi"
            floor = label_floor if is_label else psi_floor
            if c not in current.columns:
                rows.append(self._missing(c, kind, "chi2", effect_name, floor, cref.n))
                continue
            cur_counts = _cat_counts(cref, current[c])
            n_cur = int(cur_counts.sum())
            if n_cur < min_rows:
                rows.append(
                    DriftRow(c, kind, "chi2", None, None, None, None, effect_name, floor, False,
                             cref.n, n_cur, f"fewer than {min_rows} values")
                )  # fmt: skip
                continue
            ref_counts = np.append(cref.counts, 0.0)
            stat, p, _dof = stats.chi2_two_sample(ref_counts, cur_counts)
            ref_p = ref_counts / ref_counts.sum()
            cur_p = cur_counts / n_cur
            effect = float(np.max(np.abs(cur_p - ref_p))) if is_label else stats.psi(ref_p, cur_p)
            note = f"{int(cur_counts[-1])} values unseen in reference" if cur_counts[-1] else ""
            rows.append(
                DriftRow(c, kind, "chi2", stat, p, None, effect, effect_name, floor, False,
                         cref.n, n_cur, note)
            )  # fmt: skip
        adjusted = adjust_pvalues(
            np.array([np.nan if r.p_value is None else r.p_value for r in rows]), correction
        )
        for r, pa in zip(rows, adjusted, strict=True):
            if not np.isnan(pa):
                r.p_adjusted = float(pa)
                r.drifted = bool(pa < alpha and r.effect is not None and r.effect >= r.floor)
            elif r.note.startswith("column missing"):
                r.drifted = False
        return DriftReport(rows, alpha, correction, list(block_on))

    @staticmethod
    def _missing(c: str, kind: str, test: str, effect_name: str, floor: float, n: int) -> DriftRow:
        return DriftRow(
            c, kind, test, None, None, None, None, effect_name, floor, False, n, 0,
            "column missing from the current batch",
        )  # fmt: skip


def _py(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Iterable[str] = (),
    categorical: Iterable[str] = (),
    label: str | None = None,
    alpha: float = 0.05,
    correction: str = "holm",
    psi_floor: float = DEFAULT_PSI_FLOOR,
    label_floor: float = DEFAULT_LABEL_FLOOR,
    bins: int = 10,
    min_rows: int = DEFAULT_MIN_ROWS,
    block_on: Iterable[str] = (),
) -> DriftReport:
    """One-shot drift report (builds the :class:`ReferenceProfile` then compares)."""
    profile = ReferenceProfile.from_frame(
        reference, numeric=numeric, categorical=categorical, label=label, bins=bins
    )
    return profile.compare(
        current,
        alpha=alpha,
        correction=correction,
        psi_floor=psi_floor,
        label_floor=label_floor,
        min_rows=min_rows,
        block_on=block_on,
    )
