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
        what = r.tags.get("mlcicd/landed_file") or r.partition_key or _why(r.tags) or r.job
        line = f"{r.outcome.upper():<9} {r.job:<28} {what}  ({r.seconds:.1f}s, run {r.run_id[:8]})"
        print(line)
        for check in r.failed_checks:
            print(f"          gate said no: {check}")
        if r.error:
            print(f"          error: {r.error}")
    print("OK" if report.ok else "ERRORS: see the runs above and `make ui`")


def _why(tags: dict[str, str]) -> str:
    """A training or bisect run: what started it and on what."""
    parts = [tags.get("mlcicd/trigger", "")]
    if tags.get("mlcicd/batches"):
        parts.append(f"on {tags['mlcicd/batches']} batch(es)")
    if tags.get("mlcicd/new_batches"):
        parts.append(f"new: {tags['mlcicd/new_batches']}")
    if tags.get("mlcicd/dropped_batches"):
        parts.append(f"without: {tags['mlcicd/dropped_batches']}")
    return " ".join(p for p in parts if p)
