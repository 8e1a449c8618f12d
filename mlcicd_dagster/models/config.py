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

from mlcicd_dagster.platform import yamlio


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
class DesignSpec:
    """What the gates are designed for, so their error rates can be computed before any
    model exists (``models.stats.design_non_inferiority``) and a config that would
    reject an equally good model too often is refused when the pipeline loads."""

    holdout_rows: int = 1000
    """The smallest holdout the gates will judge on (the first retrain's)."""
    sd_per_row: dict[str, float] = field(default_factory=lambda: {"auc": 0.25, "log_loss": 0.15})
    """Per-row SD of candidate-minus-champion for each metric (``stats.per_row_sd`` on
    two honest retrains; bench_gate_simulation measures it on real data). Binary: ``auc``,
    ``log_loss``; multiclass and regression: ``loss`` and ``error`` (the task's per-row
    loss and error; regression: as a share of the champion's mean); ``behavioral``."""
    worse_by: dict[str, float] = field(default_factory=lambda: {"auc": 0.05, "log_loss": 0.05})
    """What "clearly worse" means per metric: the design's power is for this."""
    max_false_rejection: float = 0.10
    """Refuse the config when the whole set of gates would fail an equal model more often."""
    wait_for_holdout_rows: bool = False
    """Train and judge no model before the landed rows' holdout has ``holdout_rows`` rows:
    the training sensor skips with "waiting for more rows" (the design's error rates hold
    only at or above its sizes). For small data sets, where an early batch's holdout
    would be too small for the gates to judge it soundly."""


@dataclass(frozen=True)
class GateConfig:
    label: str = ""
    """The label column. Declared once, in the pipeline's ``defs.yaml``: the pipeline hands
    it over (``load_gate_config(path, label=...)``); a gates file may still name it (the
    same column, or the pipeline refuses to load)."""
    alpha: float = 0.05
    """One-sided level of every non-inferiority bound."""
    auc_margin: float = 0.02
    """Largest AUC loss vs the champion we accept (absolute AUC points)."""
    logloss_margin: float = 0.01
    """Largest log-loss increase vs the champion we accept (nats per row)."""
    loss_margin: float = 0.05
    """Multiclass: largest log-loss increase vs the champion accepted (nats per row)."""
    error_margin: float = 0.02
    """Multiclass: largest error-rate increase vs the champion accepted."""
    relative_margin: float = 0.10
    """Regression: largest squared-error increase accepted, as a share of the champion's."""
    relative_error_margin: float | None = None
    """Regression: largest absolute-error increase accepted, as a share of the champion's
    (default: ``relative_margin``)."""
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
    serving_max_ratio: float = 1.25
    """The candidate may be at most this much slower than the champion (median of paired,
    interleaved calls; fails only when the one-sided bound of the ratio is above it)."""
    serving_p99_ms: float | None = None
    """Optional absolute ceiling on p99 single-row latency (machine load counts here)."""
    serving_min_rows_per_s: float | None = None
    """Optional absolute floor on batch throughput (machine load counts here)."""
    serving_single_calls: int = 200
    serving_batch_calls: int = 15
    serving_batch_rows: int = 1000
    infra_rows: int = 500
    infra_atol_torch: float = 1e-6
    """float32 graphs exported by torch.export may differ from eager by one ulp."""
    infra_rtol_torch: float = 1e-5
    """Relative part for torch: float32 carries ~7 significant digits, so a regression
    output of 50 differs by ~4e-6 between eager and the exported graph (a few ulp)."""
    gates: tuple[str, ...] = ()
    """The gates to run, by registered name (default: every built-in gate)."""
    gate_modules: tuple[str, ...] = ()
    """Modules imported first so that the gates they register can be named in ``gates``."""
    design: DesignSpec = field(default_factory=DesignSpec)
    infra_atol: float = 1e-12
    """scikit-learn models: float64 sums in another order (another process, batch size,
    BLAS threads) differ in the last bits; a LogisticRegression differed by 1.9e-17."""
    infra_rtol: float = 1e-9
    """Relative part of the infra tolerance (regression outputs are not in [0, 1]):
    |served - in-memory| <= atol + rtol * |in-memory|, per output value."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: Path | None = None) -> GateConfig:
        if not isinstance(raw, dict):
            raise GateConfigError("gate config must be a mapping")
        if not raw.get("label"):
            raise GateConfigError(
                "gate config: no label: declare it once, as `label:` in the pipeline's defs.yaml"
            )
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
        design = _design(data.pop("design", None) or {})
        for key in ("gates", "gate_modules"):
            value = data.pop(key, None) or ()
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise GateConfigError(f"{key} must be a list of names")
            data[key] = tuple(value)
        bpath = data.pop("behavioral_path", None)
        if bpath is not None:
            bpath = Path(bpath)
            if not bpath.is_absolute() and base_dir is not None:
                bpath = base_dir / bpath
        try:
            return cls(slices=tuple(specs), behavioral_path=bpath, design=design, **data)
        except TypeError as exc:
            raise GateConfigError(str(exc)) from exc

    @classmethod
    def from_yaml(cls, path: str | Path, label: str | None = None) -> GateConfig:
        """The gates file at ``path``; ``label``: the pipeline's (else the one in the
        ``defs.yaml`` beside the file, else the file's own ``label:``)."""
        path = Path(path)
        try:
            raw = yamlio.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise GateConfigError(f"cannot read gate config {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise GateConfigError(f"{path}: gate config must be a mapping")
        label = label or _pipeline_label(path.parent / "defs.yaml")
        if label is not None:
            own = raw.get("label")
            if own is not None and str(own) != label:
                raise GateConfigError(
                    f"{path}: label: {own!r} differs from the pipeline's label {label!r} "
                    "(declared in defs.yaml; remove it here)"
                )
            raw = {**raw, "label": label}
        return cls.from_dict(raw, base_dir=path.parent)


def _pipeline_label(defs: Path) -> str | None:
    """``attributes.label`` of a pipeline's ``defs.yaml`` (None: no such file or field)."""
    try:
        raw = yamlio.safe_load(defs.read_text())
    except (OSError, yaml.YAMLError):
        return None
    attrs = raw.get("attributes") if isinstance(raw, dict) else None
    label = attrs.get("label") if isinstance(attrs, dict) else None
    return None if label is None else str(label)


def _design(raw: Any) -> DesignSpec:
    if not isinstance(raw, dict):
        raise GateConfigError("design must be a mapping")
    known = {f.name for f in fields(DesignSpec)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise GateConfigError(f"unknown design key(s): {', '.join(unknown)}")
    base = DesignSpec()
    try:
        sd = {
            **base.sd_per_row,
            **{str(k): float(v) for k, v in (raw.get("sd_per_row") or {}).items()},
        }
        worse = {
            **base.worse_by,
            **{str(k): float(v) for k, v in (raw.get("worse_by") or {}).items()},
        }
        rows = int(raw.get("holdout_rows", base.holdout_rows))
        top = float(raw.get("max_false_rejection", base.max_false_rejection))
        wait = raw.get("wait_for_holdout_rows", base.wait_for_holdout_rows)
    except (TypeError, ValueError) as exc:
        raise GateConfigError(f"design: {exc}") from exc
    if rows < 20:
        raise GateConfigError(f"design.holdout_rows must be >= 20, got {rows}")
    if not 0 < top < 1:
        raise GateConfigError(f"design.max_false_rejection must be in (0, 1), got {top}")
    if any(v <= 0 for v in (*sd.values(), *worse.values())):
        raise GateConfigError("design.sd_per_row and design.worse_by must be positive")
    if not isinstance(wait, bool):
        raise GateConfigError(f"design.wait_for_holdout_rows must be true or false, got {wait!r}")
    return DesignSpec(rows, sd, worse, top, wait)


def load_gate_config(path: str | Path, label: str | None = None) -> GateConfig:
    return GateConfig.from_yaml(path, label)
