"""The gates' error rates per pipeline, on real data: full-size simulation with intervals.

    .venv/bin/python -m bench.bench_gate_simulation [--reps 100] [--jobs 2]

For each shipped binary pipeline (its gates config, golden set, trainer), replicates
draw disjoint real batches from the shipped pool (``mlcicd_dagster.models.simulation``):
the champion trains on the first, an honest candidate on both (a routine retrain) and
a corrupted candidate on both with the new batch's labels inverted. Reported per
gate and for the whole set of data-driven gates (non-inferiority, slices, behavioral):
the honest pass rate and the corrupted catch rate with 95% Clopper-Pearson intervals,
beside the design's stated rates at the same sizes. Two sizes: a small retrain
(5,000 rows + 1,000 new) and the demo's (5,000 + 3,000). The serving budget and infra
validation do not depend on the data; their error rates are stated by design (and the
serving budget is tested beside a CPU hog in tests/models/test_serving_budget_load.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

from bench._report import write_section

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((5000, 1000), (5000, 3000))


def pipelines() -> list:
    """Shipped pipelines whose gates judge a binary classifier (the AUC/log-loss gates;
    multiclass and regression pipelines are judged by ``models.task_gates``)."""
    from mlcicd_dagster.component import load_spec

    specs = [
        load_spec(d) for d in sorted((ROOT / "assets").iterdir()) if (d / "defs.yaml").exists()
    ]
    return [s for s in specs if s.task == "binary" and s.sample_path is not None]


def run_pipeline(spec, reps: int, jobs: int) -> list[str]:
    from mlcicd_dagster.models import simulation
    from mlcicd_dagster.models.config import load_gate_config
    from mlcicd_dagster.models.gates import DesignSizes, design_report

    cfg = load_gate_config(spec.gates_path)
    pool = pd.read_csv(spec.sample_path)
    golden = pd.read_csv(spec.golden_path)
    fit = simulation.pipeline_fit(
        spec.trainer, dict(spec.trainer_params), spec.features, spec.label
    )
    lines = [
        f"### {spec.dataset} ({spec.trainer}, {spec.task})",
        "",
        "| retrain | gate | design: equal model fails | honest retrain passes (95% CI) | "
        "design: clearly worse caught | corrupted retrain caught (95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    for champ_rows, batch_rows in SIZES:
        settings = simulation.Settings(
            reps=reps, champion_rows=champ_rows, batch_rows=batch_rows, seed=2024, jobs=jobs
        )
        t0 = time.perf_counter()
        report = simulation.simulate(
            pool,
            golden,
            label=spec.label,
            fit=fit,
            config=cfg,
            settings=settings,
            progress=lambda k: print(f"  {k}/{reps}", end="\r", flush=True),
        )
        holdout = int((champ_rows + batch_rows) * spec.holdout_fraction)
        design = design_report(cfg, DesignSizes(holdout, len(golden), spec.task))
        label = f"{champ_rows:,} + {batch_rows:,} rows"
        for row in report.rows():
            name = row["gate"]
            d = design["gates"].get(name, {}) if name != "all" else design
            fr = d.get("false_rejection")
            pw = d.get("power")
            lines.append(
                f"| {label} | {name} | {'-' if fr is None else f'{fr:.3f}'} | "
                f"{row['honest_pass'].text()} | {'-' if pw is None else f'{pw:.3f}'} | "
                f"{row['bad_caught'].text()} |"
            )
            print(label, name, row["honest_pass"].text(), row["bad_caught"].text())
        hon, bad = report.honest_auc_change, report.bad_auc_change
        lines.append(
            f"| {label} | golden AUC change vs champion | | honest mean {sum(hon) / len(hon):+.4f}"
            f" | | corrupted mean {sum(bad) / len(bad):+.4f} |"
        )
        print(f"  {label}: {time.perf_counter() - t0:.0f} s")
    lines.append(
        "\nDesign rates for `all` are the union bound over the data-driven gates plus the "
        "serving budget (infra validation is deterministic); the simulated `all` row covers "
        "non_inferiority, slices and behavioral."
    )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 8))
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    sys.path.insert(0, str(ROOT))
    t0 = time.perf_counter()
    lines: list[str] = []
    for spec in pipelines():
        lines += run_pipeline(spec, args.reps, args.jobs)
    elapsed = time.perf_counter() - t0
    write_section(
        "bench_gate_simulation",
        f"Command: `.venv/bin/python -m bench.bench_gate_simulation --reps {args.reps} "
        f"--jobs {args.jobs}` ({elapsed:.0f} s)\n\n"
        "Goal: an honest retrain passes with probability >= 0.95 and a clearly worse model "
        "(new batch's labels inverted) is caught with probability >= 0.95, per gate and for "
        "the whole set.\n\n" + "\n".join(lines),
    )


if __name__ == "__main__":
    main()
