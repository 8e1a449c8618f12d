"""Behavioral tests (``models.behavioral``), judged against the champion when there is one.

Invariance and directional tests compare the candidate with the champion on the same
rows and the same changes (paired): the candidate fails a test only when it is
significantly (one-sided ``1 - alpha``) more sensitive, or more often wrong-way, than
the champion by more than the test's margin. Minimum-functionality tests are domain
specifications, judged as stated. The first model is held to the absolute limits.
"""

from __future__ import annotations

import math
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
    """P(an equally sensitive honest retrain fails a paired test), rows and retrains.

    Per invariance/directional test: ``D ~ N(0, se^2 + retrain_sd^2)``, ``se`` from the
    test's per-row SD (its ``row_sd``, else ``design.sd_per_row.behavioral``; the bench
    measures it) over the test's rows, and
    ``retrain_sd`` the test's measured spread between honest retrains; a test fails when
    ``D - z se > margin``. Union bound over the tests. Minimum-functionality specs are
    deterministic for a given model; their honest pass rate is shown by simulation."""
    if cfg.behavioral_path is None:
        return GateDesign(false_rejection=0.0)
    from mlcicd_dagster.models.behavioral import (
        DEFAULT_SAMPLE_ROWS,
        BehavioralSpecError,
        design_rates,
        load_spec,
        retrain_sd,
        test_margin,
    )

    spec = load_spec(cfg.behavioral_path)
    n = int(spec.get("sample_rows", DEFAULT_SAMPLE_ROWS))
    sd = cfg.design.sd_per_row.get("behavioral", 0.05)
    target = cfg.max_design_false_rejection
    rates, fixes, detail = [], [], []
    for kind in ("invariance", "directional"):
        for t in spec.get(kind) or []:
            name = t.get("name", kind)
            rows = n * len(t.get("for_each") or [None])
            se = float(t.get("row_sd", sd)) / math.sqrt(rows)
            try:
                margin = test_margin(kind, t, sizes.task)
            except BehavioralSpecError as exc:
                rates.append(1.0)
                fixes.append(f"behavioral {exc}")
                continue
            between = retrain_sd(t)
            fr, fr_rows = design_rates(se, margin, cfg.alpha, between)
            rates.append(fr)
            detail.append(
                {
                    "test": name,
                    "margin": margin,
                    "se": se,
                    "retrain_sd": between,
                    "false_rejection": fr,
                    "false_rejection_rows_only": fr_rows,
                }
            )
            if fr > target:
                need = stats.margin_for_paired_lower(se, cfg.alpha, between, target)
                fixes.append(
                    f"behavioral {name}: an equally sensitive retrain fails with probability "
                    f"{fr:.1%} (target {target:.0%}; retrain_sd {between:g}): use a margin "
                    f">= {need:.4g}"
                )
    return GateDesign(
        false_rejection=stats.combined_false_rejection(rates),
        fixes=tuple(fixes),
        detail=tuple(detail),
    )


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
    outcomes = run_behavioral(
        inp.candidate,
        inp.sets["golden"],
        dict(spec),
        champion=inp.champion,
        alpha=inp.config.alpha,
        label=inp.config.label,
    )
    rows = [
        {
            "kind": o.kind,
            "test": o.name,
            "rows": o.rows,
            "value": o.value,
            "expectation": o.expectation,
            "design_false_rejection": o.design_false_rejection,
            "design_false_rejection_rows_only": o.design_false_rejection_rows,
            "paired_diff": o.statistic,
            "se": o.se,
            "passed": o.passed,
        }
        for o in outcomes
    ]
    failed = [o.name for o in outcomes if not o.passed]
    rates = [o.design_false_rejection for o in outcomes if o.design_false_rejection is not None]
    rows_only = [
        o.design_false_rejection_rows for o in outcomes if o.design_false_rejection_rows is not None
    ]
    versus = "paired against the champion" if inp.champion is not None else "absolute limits"
    return GateResult(
        name="behavioral",
        passed=not failed,
        summary=f"{len(outcomes) - len(failed)}/{len(outcomes)} behavioral tests pass "
        f"({versus})" + (f"; failed: {', '.join(failed)}" if failed else ""),
        rows=rows,
        rule="invariance and directional tests: not significantly more sensitive than the "
        f"champion by more than each test's margin (paired, one-sided {1 - inp.config.alpha:.0%}; "
        "margins sized for the measured spread between honest retrains, retrain_sd; "
        "first model: absolute limits); minimum-functionality tests as specified; in "
        f"{getattr(inp.config.behavioral_path, 'name', 'the spec')}, on golden rows",
        numbers={"behavioral_failed": float(len(failed))},
        run_url=inp.run_url,
        design={
            "false_rejection": stats.combined_false_rejection(rates),
            "false_rejection_rows_only": stats.combined_false_rejection(rows_only),
        }
        if rates
        else {},
    )
