"""The gates' error rates per pipeline, on real data: full-size simulation with intervals.

    .venv/bin/python -m bench.bench_gate_simulation [--reps 59] [--jobs 1]
        [--pipeline credit_default] [--size 0|1]

For each shipped pipeline (its gates config and behavioral tests, golden set, trainer
and task), replicates draw disjoint real batches from the shipped pool
(``mlcicd_dagster.models.simulation``): the champion trains on the first, an honest
candidate on both (a routine retrain) and a corrupted candidate on both with the new
batch's labels corrupted (binary inverted, multiclass shifted to the next class,
regression reflected about the mean). Reported per gate and for the whole set of
data-driven gates (non-inferiority, slices, behavioral): the honest pass rate and the
corrupted catch rate with 95% Clopper-Pearson intervals, beside the design's stated
rates at the same sizes. Also measured, so the design's inputs are measured, not
assumed: per behavioral test, the spread of its paired statistic between honest
retrains (``retrain_sd``) and the false-rejection rate it implies, both ways; per
non-inferiority metric, the per-row SD (``design.sd_per_row``).

Two sizes per pipeline: a small retrain and a larger one (credit_default: 5,000 rows
+ 1,000 new and 5,000 + 3,000). The serving budget and infra validation do not depend
on the data; their error rates are stated by design (the serving budget is tested
beside a CPU hog in tests/models/test_serving_budget_load.py).

59 replicates per size: 0 failures then give a one-sided 95% lower bound of 0.95.
Each pipeline writes its own section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import pandas as pd

from bench._report import write_section

ROOT = Path(__file__).resolve().parents[1]


def sizes_for(pool_rows: int, min_rows: int = 0) -> tuple[tuple[int, int], ...]:
    """(champion rows, new rows) of the two retrains simulated for a pool.

    ``min_rows``: the fewest rows the pipeline trains and judges on (its gates' design
    waits for a holdout of ``design.holdout_rows``): a smaller retrain is raised to it,
    keeping its share of new rows."""
    if pool_rows >= 10_000:
        return ((5000, 1000), (5000, 3000))
    sizes = []
    for champ, new in ((0.45, 0.2), (0.55, 0.4)):
        c, n = int(champ * pool_rows), int(new * pool_rows)
        if c + n < min_rows:
            n = math.ceil(min_rows * new / (champ + new))
            c = min_rows - n
        sizes.append((c, n))
    return tuple(sizes)


def min_rows(cfg, holdout_fraction: float) -> int:
    """The fewest landed rows the pipeline judges a model on (0: no minimum)."""
    if not cfg.design.wait_for_holdout_rows:
        return 0
    return math.ceil(cfg.design.holdout_rows / holdout_fraction)


def pipelines(names: list[str] | None = None) -> list:
    """Shipped pipelines with a pool of labelled rows to draw batches from."""
    from mlcicd_dagster.component import load_spec

    specs = [
        load_spec(d) for d in sorted((ROOT / "assets").iterdir()) if (d / "defs.yaml").exists()
    ]
    return [s for s in specs if s.sample_path is not None and (not names or s.dataset in names)]


def design_key(metric: str, task: str) -> str:
    """The ``design.sd_per_row`` key of a non-inferiority row ("golden AUC", ...)."""
    name = metric.split(" ", 1)[1]
    if task == "binary":
        return {"AUC": "auc", "log-loss": "log_loss"}.get(name, name)
    return "error" if name in ("error rate", "absolute error") else "loss"


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def run_pipeline(spec, reps: int, jobs: int, only_size: int | None) -> list[str]:
    from mlcicd_dagster.models import simulation
    from mlcicd_dagster.models.behavioral import design_rates, load_spec, test_margin
    from mlcicd_dagster.models.gates import DesignSizes, design_report
    from mlcicd_dagster.pipeline.model_gate import _gate_config

    cfg = _gate_config(spec.gates_path, spec.behavioral_path, spec.label)
    pool = pd.read_csv(spec.sample_path)
    golden = pd.read_csv(spec.golden_path)
    fit = simulation.spec_fit(spec)
    behavioral = load_spec(cfg.behavioral_path) if cfg.behavioral_path else {}
    paired_tests = {
        t.get("name", kind): (kind, t)
        for kind in ("invariance", "directional")
        for t in behavioral.get(kind) or []
    }
    lines = [
        f"Pipeline `{spec.dataset}`: {spec.task}, trainer `{spec.trainer}`"
        + (f" ({spec.model_factory})" if spec.model_factory else "")
        + f"; pool {len(pool):,} rows, golden {len(golden):,} rows.",
        "",
        "| retrain | gate | design: equal model fails | honest retrain passes (95% CI) | "
        "design: clearly worse caught | corrupted retrain caught (95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    spread_lines: list[str] = []
    sd_lines: list[str] = []
    sizes = sizes_for(len(pool), min_rows(cfg, spec.holdout_fraction))
    chosen = [sizes[only_size]] if only_size is not None else list(sizes)
    for champ_rows, batch_rows in chosen:
        settings = simulation.spec_settings(
            spec, reps=reps, champion_rows=champ_rows, batch_rows=batch_rows, seed=2024, jobs=jobs
        )
        t0 = time.perf_counter()
        report = simulation.simulate(
            pool,
            golden,
            label=spec.label,
            fit=fit,
            config=cfg,
            settings=settings,
            progress=lambda k: print(f"  {spec.dataset} {k}/{reps}", end="\r", flush=True),
        )
        holdout = int((champ_rows + batch_rows) * spec.holdout_fraction)
        design = design_report(cfg, DesignSizes(holdout, len(golden), spec.task))
        label = f"{champ_rows:,} + {batch_rows:,} rows"
        for row in report.rows():
            name = row["gate"]
            d = design["gates"].get(name, {}) if name != "all" else design
            lines.append(
                f"| {label} | {name} | {_f(d.get('false_rejection'))} | "
                f"{row['honest_pass'].text()} | {_f(d.get('power'))} | "
                f"{row['bad_caught'].text()} |"
            )
            print(label, name, row["honest_pass"].text(), row["bad_caught"].text())
        hon, bad = report.honest_loss_change, report.bad_loss_change
        lines.append(
            f"| {label} | golden loss change vs champion (mean per row) | | honest "
            f"{sum(hon) / len(hon):+.4g} | | corrupted {sum(bad) / len(bad):+.4g} |"
        )
        for test, sp in report.retrain_spread().items():
            kind, t = paired_tests.get(test, ("invariance", {}))
            margin = test_margin(kind, t, spec.task) if t else float("nan")
            fr, fr_rows = design_rates(sp["se"], margin, cfg.alpha, sp["sd"])
            spread_lines.append(
                f"| {label} | {test} | {sp['mean']:+.4g} | {sp['sd']:.4g} | "
                f"{t.get('retrain_sd', '-')} | {sp['se']:.3g} | {margin:g} | {fr:.4f} | "
                f"{fr_rows:.2g} | {report.behavioral_pass[test].text()} |"
            )
        for test, rate in report.behavioral_pass.items():
            if test not in report.behavioral_diffs:
                spread_lines.append(
                    f"| {label} | {test} (minimum functionality) | | | | | | | | {rate.text()} |"
                )
        for metric, sds in sorted(report.row_sd.items()):
            s = sorted(sds)
            sd_lines.append(
                f"| {label} | {metric} | {s[len(s) // 2]:.3g} | {s[-1]:.3g} | "
                f"{cfg.design.sd_per_row.get(design_key(metric, spec.task), '-')} |"
            )
        print(f"  {label}: {time.perf_counter() - t0:.0f} s")
    lines += [
        "",
        "Design rates for `all` are the union bound over every configured gate (the "
        "serving budget included; infra validation is deterministic); the simulated `all` "
        "row covers non_inferiority, slices and behavioral.",
        "",
        "Behavioral tests on the honest retrains: `D` is a paired test's statistic "
        "(candidate - champion); its SD between honest retrains is what the spec's "
        "`retrain_sd` states. The design's false-rejection rate of each test at the measured "
        "spread, with and without the spread between retrains (rows only):",
        "",
        "| retrain | test | mean D | SD of D between retrains | stated retrain_sd | "
        "row-sampling SE | margin | design: equal fails (rows + retrains) | "
        "(rows only) | honest retrain passes |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *spread_lines,
    ]
    if sd_lines:
        lines += [
            "",
            "Non-inferiority: per-row SD of the paired difference on honest retrains "
            "(median and largest over replicates; regression: a share of the champion's "
            "mean) against `design.sd_per_row`:",
            "",
            "| retrain | set and metric | median | largest | stated |",
            "|---|---|---|---|---|",
            *sd_lines,
        ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=59)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--pipeline", action="append", help="only these pipelines (repeatable)")
    ap.add_argument("--size", type=int, choices=(0, 1), help="only the small (0) or large (1)")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    sys.path.insert(0, str(ROOT))
    for spec in pipelines(args.pipeline):
        t0 = time.perf_counter()
        lines = run_pipeline(spec, args.reps, args.jobs, args.size)
        elapsed = time.perf_counter() - t0
        load = os.getloadavg()[0]
        cmd = f".venv/bin/python -m bench.bench_gate_simulation --reps {args.reps} "
        cmd += f"--jobs {args.jobs} --pipeline {spec.dataset}"
        if args.size is not None:
            cmd += f" --size {args.size}"
        write_section(
            f"bench_gate_simulation: {spec.dataset}",
            f"Command: `{cmd}` ({elapsed:.0f} s; 1-minute load average at the end "
            f"{load:.1f} on {os.cpu_count()} cores)\n\n"
            "Goal: an honest retrain passes with probability >= 0.95 and a clearly worse "
            "model (the new batch's labels corrupted) is caught with probability >= 0.95, per "
            "gate and for the whole set.\n\n" + "\n".join(lines),
        )


if __name__ == "__main__":
    main()
