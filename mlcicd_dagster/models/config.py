"""Gate configuration: margins, floors, slices, budgets; read from a dataset's YAML.

The library knows no dataset: the label, the slices, the fairness groups and the
behavioral tests all come from here. Every field has a default so a config file
only states what differs; unknown keys are an error (a typo must not silently
turn a gate off).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class GateConfigError(ValueError):
    """The gate configuration is malformed (message names the key)."""


@dataclass(frozen=True)
class SliceSpec:
    """One slicing column: ``categorical`` (each value, or named ``groups`` of values)
    or ``bands`` (half-open intervals between ``edges``)."""

    column: str
    kind: str = "categorical"
    edges: tuple[float, ...] = ()
    groups: dict[str, tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class GateConfig:
    label: str
    alpha: float = 0.05
    """One-sided level of every non-inferiority bound."""
    auc_margin: float = 0.02
    """Largest AUC loss vs the champion we accept (absolute AUC points)."""
    logloss_margin: float = 0.01
    """Largest log-loss increase vs the champion we accept (nats per row)."""
    max_design_false_rejection: float = 0.05
    """Warn when, at this sample size, an equally good model would be rejected more often."""
    auc_floor: float = 0.70
    """First model ever: the lower bound of its AUC must clear this."""
    slices: tuple[SliceSpec, ...] = ()
    min_slice_size: int = 200
    """Slices with fewer rows (or < 10 of either class) are reported, not judged."""
    slice_alpha: float = 0.05
    """Family-wise error across slices (Holm)."""
    slice_margin: float = 0.03
    """A slice fails when its AUC is significantly more than this below the champion's."""
    slice_auc_floor: float = 0.60
    """First model ever: slices significantly below this AUC fail."""
    fairness_column: str | None = None
    fairness_threshold: float = 0.5
    fairness_margin: float = 0.05
    """Gap in TPR/FPR between groups may grow by at most this vs the champion."""
    fairness_max_gap: float = 0.10
    """First model ever: the absolute largest gap allowed."""
    behavioral_path: Path | None = None
    serving_p99_ms: float = 50.0
    serving_min_rows_per_s: float = 2000.0
    serving_max_ratio: float = 1.25
    serving_single_calls: int = 200
    serving_batch_rows: int = 1000
    infra_rows: int = 500
    infra_atol_torch: float = 1e-6
    """float32 graphs exported by torch.export may differ from eager by one ulp."""
    infra_atol: float = 1e-12
    """scikit-learn models: float64 sums in another order (another process, batch size,
    BLAS threads) differ in the last bits; a LogisticRegression differed by 1.9e-17."""
    infra_rtol: float = 1e-9
    """Relative part of the infra tolerance (regression outputs are not in [0, 1]):
    |served - in-memory| <= atol + rtol * |in-memory|, per output value."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: Path | None = None) -> GateConfig:
        if not isinstance(raw, dict) or "label" not in raw:
            raise GateConfigError("gate config needs at least `label:`")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise GateConfigError(f"unknown gate config key(s): {', '.join(unknown)}")
        data = dict(raw)
        specs = []
        for i, s in enumerate(data.pop("slices", None) or []):
            if not isinstance(s, dict) or "column" not in s:
                raise GateConfigError(f"slices[{i}] needs `column:`")
            kind = s.get("kind", "bands" if "edges" in s else "categorical")
            if kind not in ("categorical", "bands"):
                raise GateConfigError(f"slices[{i}].kind must be categorical or bands")
            edges = tuple(float(e) for e in s.get("edges", ()))
            if kind == "bands" and (len(edges) < 2 or list(edges) != sorted(edges)):
                raise GateConfigError(f"slices[{i}].edges must be >= 2 increasing numbers")
            groups = {str(k): tuple(v) for k, v in (s.get("groups") or {}).items()}
            specs.append(SliceSpec(str(s["column"]), kind, edges, groups))
        bpath = data.pop("behavioral_path", None)
        if bpath is not None:
            bpath = Path(bpath)
            if not bpath.is_absolute() and base_dir is not None:
                bpath = base_dir / bpath
        try:
            return cls(slices=tuple(specs), behavioral_path=bpath, **data)
        except TypeError as exc:
            raise GateConfigError(str(exc)) from exc

    @classmethod
    def from_yaml(cls, path: str | Path) -> GateConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise GateConfigError(f"cannot read gate config {path}: {exc}") from exc
        return cls.from_dict(raw, base_dir=path.parent)


def load_gate_config(path: str | Path) -> GateConfig:
    return GateConfig.from_yaml(path)
