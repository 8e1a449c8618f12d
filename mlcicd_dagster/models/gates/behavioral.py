"""Behavioral tests (``models.behavioral``), judged against the champion when there is one.

Invariance and directional tests compare the candidate with the champion on the same
rows and the same changes (paired): the candidate fails a test only when it is
significantly (one-sided ``1 - alpha``) more sensitive, or more often wrong-way, than
the champion by more than the test's margin. Minimum-functionality tests are domain
specifications, judged as stated. The first model is held to the absolute limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlcicd_dagster.models import stats
from mlcicd_dagster.models.config import GateConfig
from mlcicd_dagster.models.gates.base import (
    WARNING,
    DesignSizes,
    GateDesign,
    GateInputs,
    GateResult,
    register_gate,
)


def design(cfg: GateConfig, sizes: DesignSizes) -> GateDesign:
    """Each paired test fails an equally sensitive candidate with probability <= alpha
    (far less at the margins used); minimum-functionality specs are deterministic."""
    if cfg.behavioral_path is None:
        return GateDesign(false_rejection=0.0)
    from mlcicd_dagster.models.behavioral import DEFAULT_SAMPLE_ROWS, load_spec, test_margin

    spec = load_spec(cfg.behavioral_path)
    n = int(spec.get("sample_rows", DEFAULT_SAMPLE_ROWS))
    sd = cfg.design.sd_per_row.get("behavioral", 0.05)
    rates, fixes = [], []
    for kind in ("invariance", "directional"):
        for t in spec.get(kind) or []:
            rows = n * len(t.get("for_each") or [None])
            margin = test_margin(kind, t)
            d = stats.design_non_inferiority(
                n=rows,
                sd_per_row=sd,
                margin=max(margin, 1e-12),
                alpha=cfg.alpha,
                target=cfg.max_design_false_rejection,
                name=f"behavioral {t.get('name', kind)}",
            )
            rates.append(d.false_rejection)
            if d.fix():
                fixes.append(d.fix())
    return GateDesign(false_rejection=stats.combined_false_rejection(rates), fixes=tuple(fixes))


@register_gate(
    "behavioral",
    description="Invariance and directional tests, paired against the champion; "
    "minimum-functionality specifications.",
    order=30,
    design=design,
)
def gate_behavioral(inp: GateInputs, spec: Mapping[str, Any] | None = None) -> GateResult:
    from mlcicd_dagster.models.behavioral import load_spec, run_behavioral

    if spec is None:
        if inp.config.behavioral_path is None:
            return GateResult(
                name="behavioral",
                passed=True,
                severity=WARNING,
                summary="no behavioral tests configured",
                rows=[],
                rule="behavioral_path not set",
                run_url=inp.run_url,
            )
        spec = load_spec(inp.config.behavioral_path)
    rows_in = inp.sets["golden"].drop(columns=[inp.config.label])
    outcomes = run_behavioral(
        inp.candidate, rows_in, dict(spec), champion=inp.champion, alpha=inp.config.alpha
    )
    rows = [
        {
            "kind": o.kind,
            "test": o.name,
            "rows": o.rows,
            "value": o.value,
            "expectation": o.expectation,
            "design_false_rejection": o.design_false_rejection,
            "passed": o.passed,
        }
        for o in outcomes
    ]
    failed = [o.name for o in outcomes if not o.passed]
    rates = [o.design_false_rejection for o in outcomes if o.design_false_rejection is not None]
    versus = "paired against the champion" if inp.champion is not None else "absolute limits"
    return GateResult(
        name="behavioral",
        passed=not failed,
        summary=f"{len(outcomes) - len(failed)}/{len(outcomes)} behavioral tests pass "
        f"({versus})" + (f"; failed: {', '.join(failed)}" if failed else ""),
        rows=rows,
        rule="invariance and directional tests: not significantly more sensitive than the "
        f"champion by more than each test's margin (paired, one-sided {1 - inp.config.alpha:.0%}; "
        "first model: absolute limits); minimum-functionality tests as specified; in "
        f"{getattr(inp.config.behavioral_path, 'name', 'the spec')}, on golden rows",
        numbers={"behavioral_failed": float(len(failed))},
        run_url=inp.run_url,
        design={"false_rejection": stats.combined_false_rejection(rates)} if rates else {},
    )
