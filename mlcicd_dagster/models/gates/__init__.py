"""Model gates: registered functions that judge a candidate against the champion.

Each gate is one module that registers itself (``base.register_gate``) and returns a
``GateResult`` whose ``to_metadata()`` is what its Dagster asset check shows, with the
error rates of its design (P an equally good model fails, P a clearly worse one fails):

1. ``non_inferiority``: paired one-sided bounds per metric on holdout and golden sets;
2. ``slices``: no slice significantly worse (DeLong, Holm); fairness gap, paired bootstrap;
3. ``behavioral``: invariance/directional tests paired against the champion;
4. ``serving_budget``: paired, interleaved time ratio with the champion;
5. ``infra_validation``: the artifact loaded in a fresh process answers identically.

A pipeline's gates config names which gates run (``gates:``, default all five) and may
import modules that register more (``gate_modules:``). A gate that raises is an
*error* (``GateResult.error``), not a rejection: the step fails and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlcicd_dagster.models.config import GateConfig
from mlcicd_dagster.models.gates import (  # noqa: F401 - each registers its gate
    behavioral,
    infra_validation,
    non_inferiority,
    serving_budget,
    slices,
)
from mlcicd_dagster.models.gates.base import (
    BLOCKING,
    BUILTIN,
    WARNING,
    DesignSizes,
    Gate,
    GateDesign,
    GateInputs,
    GateResult,
    gates_of,
    register_gate,
    registered_gates,
)
from mlcicd_dagster.models.gates.behavioral import gate_behavioral
from mlcicd_dagster.models.gates.infra_validation import (
    INFRA_TIMEOUT_S,
    _InfraRun,
    gate_infra_validation,
    prewarm_infra_validation,
)
from mlcicd_dagster.models.gates.non_inferiority import PAIRED_METRICS, gate_non_inferiority
from mlcicd_dagster.models.gates.serving_budget import artifact_size_bytes, gate_serving_budget
from mlcicd_dagster.models.gates.slices import gate_slices, slice_masks
from mlcicd_dagster.platform.cpu import available_cores, cores_beside_helper, openmp_threads
from mlcicd_dagster.platform.lazy import lazy

if TYPE_CHECKING:
    import pandas as pd

    from mlcicd_dagster.models.predictor import Predictor
else:
    pd = lazy("pandas")


GATE_NAMES = BUILTIN

__all__ = [
    "BLOCKING",
    "GATE_NAMES",
    "INFRA_TIMEOUT_S",
    "PAIRED_METRICS",
    "WARNING",
    "DesignSizes",
    "Gate",
    "GateDesign",
    "GateInputs",
    "GateResult",
    "artifact_size_bytes",
    "decision_tags",
    "design_report",
    "gate_behavioral",
    "gate_infra_validation",
    "gate_non_inferiority",
    "gate_serving_budget",
    "gate_slices",
    "gates_of",
    "prewarm_infra_validation",
    "register_gate",
    "registered_gates",
    "run_all_gates",
    "slice_masks",
    "write_decision_tags",
]


def run_all_gates(
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
    only: Sequence[str] | None = None,
    task: Any = None,
) -> list[GateResult]:
    """Run every gate (or ``only`` those named) and return their results, in order.

    A gate that raises becomes a result with ``error=True`` naming the error: a broken
    gate must block (never pass silently) and is reported as an error, not a rejection.
    """
    inp = GateInputs(
        candidate,
        champion,
        holdout=holdout,
        golden=golden,
        config=config,
        candidate_uri=candidate_uri,
        champion_uri=champion_uri,
        tracking_uri=tracking_uri,
        run_url=run_url,
        champion_tracking_uri=champion_tracking_uri,
        task=task,
    )
    known = registered_gates()
    names = list(only or [g.name for g in gates_of(config)])
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown gate(s) {unknown}; known: {', '.join(known)}")
    infra: _InfraRun | None = None
    if "infra_validation" in names and candidate_uri and len(names) > 1:
        try:  # hand the fresh process its job first: it works while the other gates run
            infra = _InfraRun(inp)
        except Exception:  # noqa: BLE001 - the gate below reports the error
            infra = None
    results: dict[str, GateResult] = {}
    # The fresh process of the infra gate works on one core meanwhile (platform.cpu).
    with openmp_threads(cores_beside_helper() if infra is not None else available_cores()):
        for name in sorted(names, key=lambda n: known[n].order):
            results[name] = _run_gate(known[name], inp, infra, run_url)
    return [results[name] for name in names]


def _run_gate(
    gate: Gate, inp: GateInputs, infra: _InfraRun | None, run_url: str | None
) -> GateResult:
    try:
        if gate.name == "infra_validation" and infra is not None:
            result = infra.finish()
        else:
            result = gate.run(inp)
        if not gate.blocking:
            result.severity = WARNING
        return result
    except Exception as exc:  # noqa: BLE001 - reported as an error, never as a pass
        return GateResult(
            name=gate.name,
            passed=False,
            summary=f"gate could not judge: {type(exc).__name__}: {exc}",
            rows=[],
            rule="the gate must run to completion",
            run_url=run_url,
            error=True,
        )


def decision_tags(results: Sequence[GateResult]) -> dict[str, str]:
    """Tags for the model version: one per gate, plus the overall decision."""
    tags = {f"gate.{r.name}": r.decision for r in results}
    failed = [r.name for r in results if not r.passed and r.severity == BLOCKING]
    errored = [r.name for r in results if r.error]
    tags["gates.decision"] = "ERROR" if errored else ("FAIL" if failed else "PASS")
    tags["gates.failed"] = ",".join(failed)
    for r in results:
        tags[f"gate.{r.name}.summary"] = r.summary[:4900]
    return tags


def write_decision_tags(
    tracking_uri: str, model_name: str, version: str, results: Sequence[GateResult]
) -> dict[str, str]:
    """Write ``decision_tags(results)`` on the registered model version."""
    from mlcicd_dagster.models.registry import set_version_tags

    tags = decision_tags(results)
    set_version_tags(tracking_uri, model_name, version, tags)
    return tags


def design_report(config: GateConfig, sizes: DesignSizes) -> dict[str, Any]:
    """Error rates by design of each gate and of the whole set, at ``sizes``.

    ``false_rejection``: P(an equally good model fails) (union bound over the gates);
    ``power``: P(a clearly worse model fails) (at least the best gate's); ``fixes``:
    what would bring each gate over its target under it.
    """
    from mlcicd_dagster.models import stats

    per: dict[str, GateDesign] = {}
    for gate in gates_of(config):
        if gate.design is not None:
            per[gate.name] = gate.design(config, sizes)
    fr = stats.combined_false_rejection([d.false_rejection for d in per.values()])
    powers = [d.power for d in per.values() if d.power is not None]
    return {
        "gates": {k: {**d.as_dict(), "fixes": list(d.fixes)} for k, d in per.items()},
        "false_rejection": fr,
        "power": stats.combined_power(powers),
        "fixes": [f for d in per.values() for f in d.fixes],
        "sizes": {"holdout_rows": sizes.holdout_rows, "golden_rows": sizes.golden_rows},
    }
