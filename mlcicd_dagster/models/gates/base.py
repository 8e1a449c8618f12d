"""What every gate shares: its result, its inputs and the one registry of gates.

A gate is a function ``GateInputs -> GateResult`` registered under a name with
:func:`register_gate`; adding a gate is one module that registers itself plus its
name in the pipeline's gates config (``gates:``, and ``gate_modules:`` for modules
outside the library). Every gate states its error rates: the result carries the
design's false-rejection rate (an equally good candidate rejected) and its power
(a clearly worse one caught) at the sizes it judged, shown in the check's metadata.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlcicd_dagster.models.config import GateConfig
from mlcicd_dagster.platform.lazy import lazy

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlcicd_dagster.models.predictor import Predictor
else:
    np = lazy("numpy")
    pd = lazy("pandas")


BLOCKING = "ERROR"
WARNING = "WARN"


@dataclass
class GateResult:
    """The outcome of one gate, readable by people and by the asset check."""

    name: str
    passed: bool
    summary: str
    rows: list[dict[str, Any]]
    rule: str
    severity: str = BLOCKING
    numbers: dict[str, float] = field(default_factory=dict)
    run_url: str | None = None
    design: dict[str, float] = field(default_factory=dict)
    """The gate's error rates by design at the sizes judged: ``false_rejection`` (P an
    equally good candidate fails) and ``power`` (P a clearly worse one fails)."""
    error: bool = False
    """True when the gate could not judge (it raised): an error, not a rejection."""

    @property
    def decision(self) -> str:
        if self.error:
            return "ERROR"
        return "PASS" if self.passed else "FAIL"

    def to_markdown(self) -> str:
        lines = [
            f"**{self.name}: {self.decision}**: {md_escape(self.summary)}",
            "",
            f"Rule: {md_escape(self.rule)}",
        ]
        if self.design:
            lines += ["", "Error rates by design: " + design_text(self.design)]
        if self.rows:
            cols = list(dict.fromkeys(k for r in self.rows for k in r))
            lines += ["", md_row(cols), "|" + "---|" * len(cols)]
            for r in self.rows:
                lines.append(md_row([_fmt(r.get(c)) for c in cols]))
        if self.run_url:
            lines += ["", f"MLflow run: {self.run_url}"]
        return "\n".join(lines)

    def to_metadata(self) -> dict[str, Any]:
        """Dagster metadata: a table, the rule, the decision, numbers, the MLflow link."""
        import dagster as dg

        md: dict[str, Any] = {
            "decision": dg.MetadataValue.text(self.decision),
            "rule": dg.MetadataValue.text(self.rule),
            "summary": dg.MetadataValue.md(self.to_markdown()),
        }
        if self.rows:
            cols = list(dict.fromkeys(k for r in self.rows for k in r))
            types = {c: _col_type([r.get(c) for r in self.rows]) for c in cols}
            schema = dg.TableSchema(columns=[dg.TableColumn(c, types[c]) for c in cols])
            records = [
                dg.TableRecord({c: _cell(r.get(c), types[c]) for c in cols}) for r in self.rows
            ]
            md["table"] = dg.MetadataValue.table(records=records, schema=schema)
        for k, v in self.numbers.items():
            if v is not None and math.isfinite(v):
                md[k] = dg.MetadataValue.float(round(float(v), 6))
        for k, v in self.design.items():
            if v is not None and math.isfinite(v):
                md[f"design_{k}"] = dg.MetadataValue.float(round(float(v), 6))
        if self.run_url:
            md["mlflow_run"] = (
                dg.MetadataValue.url(self.run_url)
                if self.run_url.startswith("http")
                else dg.MetadataValue.text(self.run_url)
            )
        return md

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "decision": self.decision,
            "summary": self.summary,
            "rule": self.rule,
            "severity": self.severity,
            "rows": self.rows,
            "numbers": self.numbers,
            "design": self.design,
            "error": self.error,
        }


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def md_escape(text: Any) -> str:
    """Text safe inside a Markdown table cell: ``|`` escaped, newlines flattened."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(md_escape(c) for c in cells) + " |"


def design_text(design: Mapping[str, float]) -> str:
    parts = []
    if "false_rejection" in design:
        parts.append(
            f"an equally good model fails with probability {design['false_rejection']:.3g}"
        )
    if "false_rejection_rows_only" in design:
        parts.append(
            f"{design['false_rejection_rows_only']:.3g} counting row sampling alone "
            "(not the spread between honest retrains)"
        )
    if "power" in design:
        parts.append(f"a clearly worse one fails with probability {design['power']:.3g}")
    return "; ".join(parts) or "-"


def _col_type(values: Sequence[Any]) -> str:
    vals = [v for v in values if v is not None]
    if vals and all(isinstance(v, bool) for v in vals):
        return "bool"
    if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "int"
    if vals and all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        return "float"
    return "string"


def _cell(v: Any, typ: str) -> Any:
    if v is None:
        return None
    if typ == "float":
        return float(f"{float(v):.4g}") if math.isfinite(float(v)) else None
    if typ in ("int", "bool"):
        return v
    return str(v)


class GateInputs:
    """What every gate reads; scores are computed once and shared by all gates."""

    def __init__(
        self,
        candidate: Predictor,
        champion: Predictor | None,
        *,
        holdout: pd.DataFrame,
        golden: pd.DataFrame,
        config: GateConfig,
        candidate_uri: str | None = None,
        champion_uri: str | None = None,
        tracking_uri: str | None = None,
        run_url: str | None = None,
        champion_tracking_uri: str | None = None,
        task: Any = None,
    ):
        for name, frame in (("holdout", holdout), ("golden", golden)):
            if config.label not in frame.columns:
                raise ValueError(f"{name} set has no label column {config.label!r}")
            if len(frame) < 20:
                raise ValueError(f"{name} set has only {len(frame)} rows")
        self.candidate = candidate
        self.champion = champion
        self.sets = {
            "holdout": holdout.reset_index(drop=True),
            "golden": golden.reset_index(drop=True),
        }
        self.config = config
        self.candidate_uri = candidate_uri
        self.champion_uri = champion_uri
        self.tracking_uri = tracking_uri
        self.champion_tracking_uri = champion_tracking_uri or tracking_uri
        self.run_url = run_url
        self.task = task
        """The pipeline's task object (``models.tasks``) when it has one; metrics and
        per-row losses that fit the task plug in through it."""
        self._scores: dict[tuple[str, str], np.ndarray] = {}

    def labels(self, set_name: str) -> np.ndarray:
        return self.sets[set_name][self.config.label].to_numpy().astype(np.int64)

    def scores(self, which: str, set_name: str) -> np.ndarray:
        key = (which, set_name)
        if key not in self._scores:
            model = self.candidate if which == "candidate" else self.champion
            if model is None:
                raise ValueError("no champion")
            self._scores[key] = np.asarray(model.predict_proba(self.sets[set_name]), np.float64)
        return self._scores[key]

    @property
    def combined(self) -> pd.DataFrame:
        return pd.concat([self.sets["holdout"], self.sets["golden"]], ignore_index=True)

    def combined_scores(self, which: str) -> np.ndarray:
        return np.concatenate([self.scores(which, "holdout"), self.scores(which, "golden")])


def _result(inp: GateInputs, **kw: Any) -> GateResult:
    return GateResult(run_url=inp.run_url, **kw)


# ---------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------
GateFn = Callable[[GateInputs], GateResult]
DesignFn = Callable[[GateConfig, "DesignSizes"], "GateDesign"]


@dataclass(frozen=True)
class DesignSizes:
    """The data sizes a gate is designed for (from the gates config's ``design:``)."""

    holdout_rows: int
    golden_rows: int
    task: str = "binary"
    """The pipeline's task: the AUC/log-loss designs are the binary task's (the other
    tasks' per-row metrics, ``models.task_gates``, state their own rates)."""


@dataclass(frozen=True)
class GateDesign:
    """A gate's error rates by design: P(equal model fails), P(clearly worse fails),
    and, when the first is too high, what would fix it."""

    false_rejection: float
    power: float | None = None
    fixes: tuple[str, ...] = ()
    detail: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, float]:
        out = {"false_rejection": self.false_rejection}
        if self.power is not None:
            out["power"] = self.power
        return out


@dataclass(frozen=True)
class Gate:
    """One registered gate: its check name, what it judges, its order, its design."""

    name: str
    run: GateFn
    description: str
    order: int = 100
    design: DesignFn | None = None
    blocking: bool = True


_REGISTRY: dict[str, Gate] = {}


def register_gate(
    name: str,
    *,
    description: str,
    order: int = 100,
    design: DesignFn | None = None,
    blocking: bool = True,
) -> Callable[[GateFn], GateFn]:
    """Register ``fn`` as the gate ``name`` (the asset check's name in the UI)."""

    def deco(fn: GateFn) -> GateFn:
        if name in _REGISTRY and _REGISTRY[name].run is not fn:
            raise ValueError(f"a gate named {name!r} is already registered")
        _REGISTRY[name] = Gate(name, fn, description, order, design, blocking)
        return fn

    return deco


def registered_gates() -> dict[str, Gate]:
    """Every registered gate by name, in evaluation order."""
    import mlcicd_dagster.models.gates  # noqa: F401 - registers the built-in gates

    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def gates_of(config: GateConfig) -> list[Gate]:
    """The gates a pipeline runs: its config's ``gates:`` (default: every built-in
    gate), after importing ``gate_modules:`` so their gates register themselves."""
    import importlib

    for module in config.gate_modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            from mlcicd_dagster.models.config import GateConfigError

            raise GateConfigError(f"gate_modules: cannot import {module!r}: {exc}") from exc
    known = registered_gates()
    names = list(config.gates) if config.gates else [n for n in known if n in BUILTIN]
    unknown = [n for n in names if n not in known]
    if unknown:
        from mlcicd_dagster.models.config import GateConfigError

        raise GateConfigError(
            f"gates: unknown gate(s) {', '.join(unknown)}; registered: {', '.join(known)}"
        )
    return sorted((known[n] for n in names), key=lambda g: g.order)


BUILTIN = ("non_inferiority", "slices", "behavioral", "serving_budget", "infra_validation")
