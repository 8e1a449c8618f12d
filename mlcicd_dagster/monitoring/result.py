"""What one monitoring window found, in forms for JSON, Dagster metadata and asset checks.

Plain data (no Dagster import at module level): the lead's ``monitoring`` asset turns
:meth:`MonitoringResult.to_metadata` into the materialization's metadata and
:meth:`MonitoringResult.checks` into asset-check results.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlcicd_dagster.monitoring.metrics import (
    Degradation,
    MetricEstimate,
    degraded_metrics,
)

SEVERITY_WARN = "WARN"
SEVERITY_ERROR = "ERROR"


@dataclass(frozen=True)
class MonitorConfig:
    """Knobs of one window's computation and of its asset checks.

    ``degradation_alpha`` is the family-wise one-sided false-alarm rate of the
    degradation check per model version and window (Bonferroni across metrics);
    ``degradation_margins`` are effect-size floors in each metric's units.
    ``drift_alpha`` is passed to the data gate's drift statistics (their
    multiple-testing control across features).
    """

    level: float = 0.95  # two-sided level of the intervals shown
    threshold: float = 0.5  # accuracy: positive when P(positive) >= threshold
    min_labels: int = 200  # labelled rows before a metric may confirm a degradation
    degradation_alpha: float = 0.01
    degradation_margins: Mapping[str, float] = field(
        default_factory=lambda: {"auc": 0.02, "accuracy": 0.02, "log_loss": 0.03}
    )
    drift_alpha: float = 0.05
    drift_correction: str = "holm"  # holm (family-wise) | bh (false discovery rate)
    psi_floor: float | None = None  # None: the data gate's default effect-size floor
    min_drift_rows: int = 200  # fewer served rows than this: drift is not judged
    max_drift_rows: int | None = 200_000  # drift on ~this many rows (hash sample of request ids)
    min_label_coverage: float = 0.0  # WARN below this share of labelled predictions

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "threshold": self.threshold,
            "min_labels": self.min_labels,
            "degradation_alpha": self.degradation_alpha,
            "degradation_margins": dict(self.degradation_margins),
            "drift_alpha": self.drift_alpha,
            "drift_correction": self.drift_correction,
            "psi_floor": self.psi_floor,
            "min_drift_rows": self.min_drift_rows,
            "max_drift_rows": self.max_drift_rows,
            "min_label_coverage": self.min_label_coverage,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MonitorConfig:
        return cls(
            **{k: d[k] for k in cls().to_dict() if k in d},
        )


@dataclass(frozen=True)
class DriftSummary:
    """Per-feature drift of one window against the reference (data gate statistics)."""

    n_reference: int
    n_current: int
    alpha: float
    method: str
    rows: tuple[dict[str, Any], ...]  # feature, kind, statistic, p_value, p_adjusted, effect, ...
    drifted: tuple[str, ...]
    judged: bool = True  # False when too few rows to judge
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "alpha": self.alpha,
            "method": self.method,
            "judged": self.judged,
            "note": self.note,
            "drifted": list(self.drifted),
            "features": [_clean(r) for r in self.rows],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftSummary:
        return cls(
            n_reference=int(d["n_reference"]),
            n_current=int(d["n_current"]),
            alpha=float(d["alpha"]),
            method=str(d["method"]),
            rows=tuple(d.get("features", ())),
            drifted=tuple(d.get("drifted", ())),
            judged=bool(d.get("judged", True)),
            note=str(d.get("note", "")),
        )


@dataclass(frozen=True)
class VersionMetrics:
    """Live behaviour of one model version within the window."""

    version: str
    tracks: tuple[str, ...]
    n_predictions: int
    n_labeled: int
    n_invalid_labels: int  # feedback labels outside {0, 1}: not used in metrics
    label_coverage: float
    label_delay_s: Mapping[str, float] | None  # p50, p90, max seconds
    mean_prediction: float
    label_rate: float | None
    metrics: Mapping[str, MetricEstimate]
    baseline: Mapping[str, Any] | None = None
    prediction_drift: DriftSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "tracks": list(self.tracks),
            "n_predictions": self.n_predictions,
            "n_labeled": self.n_labeled,
            "n_invalid_labels": self.n_invalid_labels,
            "label_coverage": _num(self.label_coverage),
            "label_delay_s": dict(self.label_delay_s) if self.label_delay_s else None,
            "mean_prediction": _num(self.mean_prediction),
            "label_rate": _num(self.label_rate),
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "baseline": _baseline_dict(self.baseline),
            "prediction_drift": self.prediction_drift.to_dict() if self.prediction_drift else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VersionMetrics:
        pd_ = d.get("prediction_drift")
        return cls(
            version=str(d["version"]),
            tracks=tuple(d.get("tracks", ())),
            n_predictions=int(d["n_predictions"]),
            n_labeled=int(d["n_labeled"]),
            n_invalid_labels=int(d.get("n_invalid_labels", 0)),
            label_coverage=_float(d.get("label_coverage")),
            label_delay_s=d.get("label_delay_s"),
            mean_prediction=_float(d.get("mean_prediction")),
            label_rate=d.get("label_rate"),
            metrics={k: MetricEstimate.from_dict(v) for k, v in d.get("metrics", {}).items()},
            baseline=d.get("baseline"),
            prediction_drift=DriftSummary.from_dict(pd_) if pd_ else None,
        )

    def degradations(self, config: MonitorConfig) -> list[Degradation]:
        return degraded_metrics(
            self.metrics,
            self.baseline,
            margins=config.degradation_margins,
            alpha=config.degradation_alpha,
            min_labels=config.min_labels,
        )


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check of the window: the lead maps it to ``dg.AssetCheckResult``."""

    name: str
    severity: str  # WARN | ERROR
    passed: bool
    description: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __iter__(self):  # unpack as (name, severity, passed, description)
        return iter((self.name, self.severity, self.passed, self.description))


@dataclass(frozen=True)
class MonitoringResult:
    model_name: str
    start: dt.datetime
    end: dt.datetime
    as_of: dt.datetime
    n_predictions: int  # served rows (shadow duplicates not counted)
    versions: tuple[VersionMetrics, ...]
    primary_version: str | None  # the version that served most stable traffic
    feature_drift: DriftSummary | None
    config: MonitorConfig = field(default_factory=MonitorConfig)
    n_duplicate_feedback: int = 0  # extra feedback rows for one request (last one wins)

    @property
    def window_key(self) -> str:
        return f"{_stamp(self.start)}_{_stamp(self.end)}"

    def version(self, version: str | None) -> VersionMetrics | None:
        for v in self.versions:
            if v.version == version:
                return v
        return None

    # -- serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``mlcicd status --json`` under ``monitoring``)."""
        return {
            "model_name": self.model_name,
            "window": {
                "start": self.start.isoformat(),
                "end": self.end.isoformat(),
                "key": self.window_key,
            },
            "as_of": self.as_of.isoformat(),
            "n_predictions": self.n_predictions,
            "n_duplicate_feedback": self.n_duplicate_feedback,
            "primary_version": self.primary_version,
            "versions": [v.to_dict() for v in self.versions],
            "feature_drift": self.feature_drift.to_dict() if self.feature_drift else None,
            "checks": [
                {
                    "name": c.name,
                    "severity": c.severity,
                    "passed": c.passed,
                    "description": c.description,
                }
                for c in self.checks()
            ],
            "config": self.config.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MonitoringResult:
        fd = d.get("feature_drift")
        return cls(
            model_name=str(d["model_name"]),
            start=dt.datetime.fromisoformat(d["window"]["start"]),
            end=dt.datetime.fromisoformat(d["window"]["end"]),
            as_of=dt.datetime.fromisoformat(d["as_of"]),
            n_predictions=int(d["n_predictions"]),
            versions=tuple(VersionMetrics.from_dict(v) for v in d.get("versions", ())),
            primary_version=d.get("primary_version"),
            feature_drift=DriftSummary.from_dict(fd) if fd else None,
            config=MonitorConfig.from_dict(d.get("config", {})),
            n_duplicate_feedback=int(d.get("n_duplicate_feedback", 0)),
        )

    # -- checks ----------------------------------------------------------------
    def checks(self) -> list[CheckOutcome]:
        """The window's asset checks, always the same four names in the same order."""
        cfg = self.config
        out: list[CheckOutcome] = []

        # live_performance (ERROR): label-confirmed degradation against deployment.
        degraded = {v.version: v.degradations(cfg) for v in self.versions}
        bad = {k: d for k, d in degraded.items() if d}
        if bad:
            desc = "; ".join(
                f"version {ver}: " + ", ".join(d.describe() for d in ds) for ver, ds in bad.items()
            )
        else:
            judged = [
                v.version for v in self.versions if v.baseline and v.n_labeled >= cfg.min_labels
            ]
            desc = (
                f"no label-confirmed degradation (versions judged: {', '.join(judged)})"
                if judged
                else "not judged: no version has a deployment baseline and "
                f">= {cfg.min_labels} labels yet"
            )
        out.append(
            CheckOutcome(
                "live_performance",
                SEVERITY_ERROR,
                not bad,
                desc,
                {"degraded": {k: [d.to_dict() for d in ds] for k, ds in bad.items()}},
            )
        )

        # feature_drift (WARN)
        fd = self.feature_drift
        if fd is None:
            out.append(CheckOutcome("feature_drift", SEVERITY_WARN, True, "no reference given"))
        elif not fd.judged:
            out.append(CheckOutcome("feature_drift", SEVERITY_WARN, True, fd.note))
        else:
            desc = (
                f"drift in {len(fd.drifted)} of {len(fd.rows)} features: {', '.join(fd.drifted)}"
                if fd.drifted
                else f"no significant drift in {len(fd.rows)} features ({fd.method})"
            )
            out.append(
                CheckOutcome(
                    "feature_drift", SEVERITY_WARN, not fd.drifted, desc, {"drifted": fd.drifted}
                )
            )

        # prediction_drift (WARN)
        drifted_versions = [
            v.version for v in self.versions if v.prediction_drift and v.prediction_drift.drifted
        ]
        judged_pd = [
            v.version for v in self.versions if v.prediction_drift and v.prediction_drift.judged
        ]
        if drifted_versions:
            desc = f"prediction distribution drifted for version(s) {', '.join(drifted_versions)}"
        elif judged_pd:
            desc = f"prediction distribution stable for version(s) {', '.join(judged_pd)}"
        else:
            desc = "not judged: no reference predictions or too few rows"
        out.append(CheckOutcome("prediction_drift", SEVERITY_WARN, not drifted_versions, desc))

        # label_coverage (WARN)
        low = [
            v
            for v in self.versions
            if v.n_predictions and (v.label_coverage or 0.0) < cfg.min_label_coverage
        ]
        if self.n_predictions == 0:
            out.append(CheckOutcome("label_coverage", SEVERITY_WARN, True, "no traffic in window"))
        else:
            cov = ", ".join(f"{v.version}: {v.label_coverage:.1%}" for v in self.versions)
            out.append(
                CheckOutcome(
                    "label_coverage",
                    SEVERITY_WARN,
                    not low,
                    f"labelled share per version: {cov} (minimum {cfg.min_label_coverage:.1%})",
                )
            )
        return out

    # -- Dagster metadata ----------------------------------------------------------
    def to_metadata(self) -> dict[str, Any]:
        """Readable metadata for the materialization (Markdown tables, numbers)."""
        import dagster as dg  # lazy: the library stays importable without Dagster

        md: dict[str, Any] = {
            "window": dg.MetadataValue.text(f"{self.start.isoformat()} .. {self.end.isoformat()}"),
            "n_predictions": dg.MetadataValue.int(self.n_predictions),
            "primary_version": dg.MetadataValue.text(self.primary_version or "-"),
            "versions": dg.MetadataValue.md(self.versions_markdown()),
        }
        if self.feature_drift is not None:
            md["feature_drift"] = dg.MetadataValue.md(drift_markdown(self.feature_drift))
            md["drifted_features"] = dg.MetadataValue.text(
                ", ".join(self.feature_drift.drifted) or "none"
            )
        pv = self.version(self.primary_version)
        if pv is not None:
            for name, est in pv.metrics.items():
                md[f"live_{name}"] = dg.MetadataValue.float(float(est.value))
            md["label_coverage"] = dg.MetadataValue.float(float(pv.label_coverage))
        return md

    def versions_markdown(self) -> str:
        head = (
            "| version | tracks | predictions | labelled | coverage | delay p50 s | AUC | "
            "log-loss | accuracy | baseline | prediction drift |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n"
        )
        lines = []
        for v in self.versions:
            delay = v.label_delay_s.get("p50") if v.label_delay_s else None
            pd_ = v.prediction_drift
            lines.append(
                f"| {v.version} | {','.join(v.tracks)} | {v.n_predictions} | {v.n_labeled} | "
                f"{v.label_coverage:.1%} | {_fmt(delay, '.0f')} | {_ci(v.metrics.get('auc'))} | "
                f"{_ci(v.metrics.get('log_loss'))} | {_ci(v.metrics.get('accuracy'))} | "
                f"{_baseline_text(v.baseline)} | "
                f"{'-' if pd_ is None or not pd_.judged else ('yes' if pd_.drifted else 'no')} |"
            )
        return head + "\n".join(lines)


def drift_markdown(fd: DriftSummary) -> str:
    if not fd.judged:
        return fd.note
    keys = [
        k
        for k in (
            "feature",
            "kind",
            "test",
            "statistic",
            "p_adjusted",
            "effect",
            "effect_name",
            "note",
        )
        if any(k in r for r in fd.rows)
    ]
    extra = "drifted"
    head = "| " + " | ".join([*keys, extra]) + " |\n|" + "---|" * (len(keys) + 1) + "\n"
    body = []
    for r in fd.rows:
        cells = [
            _fmt(r.get(k), ".4g") if not isinstance(r.get(k), str) else str(r[k]) for k in keys
        ]
        body.append("| " + " | ".join([*cells, "**yes**" if r.get("drifted") else "no"]) + " |")
    return (
        f"{fd.method}; reference {fd.n_reference} rows, window {fd.n_current} rows\n\n"
        + head
        + "\n".join(body)
    )


def _ci(est: MetricEstimate | None) -> str:
    if est is None:
        return "-"
    return f"{est.value:.4f} [{est.lo:.4f}, {est.hi:.4f}]"


def _baseline_text(b: Mapping[str, Any] | None) -> str:
    if not b:
        return "-"
    d = _baseline_dict(b) or {}
    return ", ".join(f"{k} {v['value']:.4f}" for k, v in d.items())


def _baseline_dict(b: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not b:
        return None
    from mlcicd_dagster.monitoring.metrics import baseline_value

    out = {}
    for k, v in b.items():
        value, se = baseline_value(v)
        out[k] = {"value": value, "se": se}
    return out


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return str(v)
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _clean(r: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in r.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def _stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
