"""Infra validation: the registered artifact, loaded as the server loads it in a fresh
process, answers exactly as the in-memory model (a deterministic check: an equally good
model never fails it; a broken artifact always does).

The fresh process is a child forked from a worker that has only imported the serving
code (``infra_worker``); sklearn within float64 rounding, torch export within float32
rounding (an absolute plus a relative tolerance, ``GateConfig.infra_*``).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlcicd_dagster.models.config import GateConfig
from mlcicd_dagster.models.gates.base import (
    DesignSizes,
    GateDesign,
    GateInputs,
    GateResult,
    register_gate,
)
from mlcicd_dagster.models.trust import declared_trusted_types, model_name_of
from mlcicd_dagster.platform.lazy import lazy

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy("numpy")


INFRA_TIMEOUT_S = 180
"""A fresh process imports mlflow and the model: seconds, not minutes."""


def _result(inp: GateInputs, **kw):  # type: ignore[no-untyped-def]
    return GateResult(run_url=inp.run_url, **kw)


def design(cfg: GateConfig, sizes: DesignSizes) -> GateDesign:
    return GateDesign(false_rejection=0.0, power=1.0)


def _infra_rule(cfg: GateConfig) -> str:
    return (
        "the registered artifact, loaded by the server's loader in a fresh process, answers "
        "the same rows (one batch request, single-row requests) as the in-memory model, "
        f"within |diff| <= {cfg.infra_atol:g} + {cfg.infra_rtol:g} * |value| "
        f"(torch: {cfg.infra_atol_torch:g} + {cfg.infra_rtol_torch:g} * |value|, float32)"
    )


def _tracking_uri(inp: GateInputs) -> str:
    """The store the fresh process reads: the gate's, else the one this process uses.

    Never empty: an empty URI would send the child to MLflow's default store, a new
    ``mlflow.db`` in whatever directory it runs in.
    """
    if inp.tracking_uri:
        return inp.tracking_uri
    import mlflow

    return mlflow.get_tracking_uri()


def prewarm_infra_validation() -> None:
    """Start the fresh-process worker infra validation will use, before the model exists.

    Its imports (mlflow, scikit-learn, skops: seconds) then overlap the data gate and
    training instead of adding to the gates; a long-lived process keeps it between runs.
    Each job still runs in a new process that has never held a model (see
    ``infra_worker``). Without a prewarm the gate starts the worker itself.
    """
    from mlcicd_dagster.models import infra_worker

    infra_worker.prewarm()


class _InfraRun:
    """A fresh-process load handed over first, so it overlaps the other gates."""

    def __init__(self, inp: GateInputs):
        from mlcicd_dagster.models import infra_worker

        self.inp = inp
        self.tmp = tempfile.TemporaryDirectory(prefix="mlcicd-infra-")
        rows = inp.sets["golden"].drop(columns=[inp.config.label]).iloc[: inp.config.infra_rows]
        self.rows = rows
        data = Path(self.tmp.name) / "rows.parquet"
        rows.to_parquet(data)
        self.out = str(Path(self.tmp.name) / "answer")
        self.t0 = time.perf_counter()
        self.worker = infra_worker.take()
        self.worker.submit(
            infra_worker.Job(
                model_uri=str(inp.candidate_uri),
                tracking_uri=_tracking_uri(inp),
                rows_path=str(data),
                out=self.out,
                trusted_types=declared_trusted_types(model_name_of(str(inp.candidate_uri))),
            )
        )

    def _failed(self, summary: str) -> GateResult:
        return _result(
            self.inp,
            name="infra_validation",
            passed=False,
            rows=[],
            rule=_infra_rule(self.inp.config),
            summary=summary,
        )

    def _log_tail(self) -> str:
        try:
            lines = Path(self.out + ".log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-3:]) or "no log"

    def finish(self) -> GateResult:
        from mlcicd_dagster.models import infra_worker

        inp, cfg = self.inp, self.inp.config
        try:
            try:
                expected = np.asarray(inp.candidate.predict_proba(self.rows), np.float64)
                code = self.worker.wait(INFRA_TIMEOUT_S)
            except infra_worker.WorkerGone as exc:
                return self._failed(f"fresh process failed: {exc}")
            except BaseException:
                self.worker.kill()  # a job still in hand: never hand this worker out again
                raise
            elapsed = time.perf_counter() - self.t0
            if code is None:
                return self._failed(f"fresh process did not answer within {INFRA_TIMEOUT_S} s")
            infra_worker.release(self.worker)
            if code != 0:
                return self._failed("fresh process failed to load or score: " + self._log_tail())
            batch = np.load(self.out + ".batch.npy")
            single = np.load(self.out + ".single.npy")
            meta = json.loads(Path(self.out + ".json").read_text())
        finally:
            self.tmp.cleanup()
        is_torch = meta.get("flavor") == "torch"
        atol = cfg.infra_atol_torch if is_torch else cfg.infra_atol
        rtol = cfg.infra_rtol_torch if is_torch else cfg.infra_rtol

        def compare(got: np.ndarray, want: np.ndarray) -> tuple[float, bool]:
            """(largest |difference|, every value within atol + rtol * |in-memory|)."""
            if got.shape != want.shape:
                return math.inf, False
            d = np.abs(got - want)
            ok = bool(np.all(d <= atol + rtol * np.abs(want)))
            return float(np.max(d, initial=0.0)), ok

        diff_b, ok_b = compare(batch, expected)
        diff_s, ok_s = compare(single, expected[: len(single)])
        same_features = meta["features"] == list(inp.candidate.feature_names)
        passed = ok_b and ok_s and same_features
        table = [
            {
                "check": "batch request",
                "rows": len(expected),
                "max_abs_diff": diff_b,
                "tolerance": atol,
                "rtol": rtol,
                "passed": ok_b,
            },
            {
                "check": "single-row requests",
                "rows": len(single),
                "max_abs_diff": diff_s,
                "tolerance": atol,
                "rtol": rtol,
                "passed": ok_s,
            },
            {
                "check": "feature names",
                "rows": None,
                "max_abs_diff": None,
                "tolerance": None,
                "rtol": None,
                "passed": same_features,
            },
        ]
        return _result(
            inp,
            name="infra_validation",
            passed=passed,
            summary=f"version {meta['version']} ({meta.get('flavor')}) loaded in a fresh process "
            f"in {elapsed:.1f} s; max |difference| {max(diff_b, diff_s):.2e}",
            rows=table,
            rule=_infra_rule(cfg),
            numbers={"max_abs_diff": max(diff_b, diff_s), "fresh_process_s": elapsed},
        )


@register_gate(
    "infra_validation",
    description="The registered artifact, loaded in a fresh process by the serving code, "
    "answers exactly as the in-memory model.",
    order=50,
    design=design,
)
def gate_infra_validation(inp: GateInputs) -> GateResult:
    if not inp.candidate_uri:
        return _result(
            inp,
            name="infra_validation",
            passed=False,
            summary="no registered artifact to validate (candidate_uri missing)",
            rows=[],
            rule=_infra_rule(inp.config),
        )
    return _InfraRun(inp).finish()
