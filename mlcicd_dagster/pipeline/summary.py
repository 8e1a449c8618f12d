"""Human-readable output of ``mlcicd cycle``."""

from __future__ import annotations

from mlcicd_dagster.pipeline.cycle import CONTROLLER_SUFFIX, CycleReport


def print_cycle(report: CycleReport) -> None:
    for name, message in report.skipped.items():
        if name.endswith(CONTROLLER_SUFFIX) and not message.startswith("idle"):
            print(f"ROLLOUT   {message}")
    if not report.runs:
        reasons = "; ".join(f"{k}: {v}" for k, v in report.skipped.items())
        print(f"Nothing to do ({reasons or 'no sensor requested a run'}).")
        return
    for r in report.runs:
        what = r.tags.get("mlcicd/landed_file") or r.partition_key or r.job
        line = f"{r.outcome.upper():<9} {r.job:<28} {what}  ({r.seconds:.1f}s, run {r.run_id[:8]})"
        print(line)
        for check in r.failed_checks:
            print(f"          gate said no: {check}")
        if r.error:
            print(f"          error: {r.error}")
    print("OK" if report.ok else "ERRORS: see the runs above and `make ui`")
