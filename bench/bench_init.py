"""`mlcicd init` on a 20,000-row file, and the sized gates held to their design.

1. Speed (goal: <= 10 s): the command in fresh processes (median of 3), against a
   baseline measured in the same run: a fresh process that imports pandas and reads
   the same file (what any tool that looks at the file pays).
2. The design by simulation: with the gates ``init`` wrote, honest retrains (the
   default trainer on fresh draws of the same source, as large as the file's other
   rows) are judged by the production non-inferiority gate against each other; a
   clearly worse model (one feature) is judged against the same champions. Goal:
   honest pass rate >= 0.95, worse-model catch rate >= 0.95 (Wilson 95% intervals).

    .venv/bin/python -m bench.bench_init [--reps 40]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "init"))

from init_synth import draw  # noqa: E402

from bench._report import write_section  # noqa: E402

ROWS = 20_000
RUNS = 3
GOAL_S = 10.0


def _wall(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child: user + system)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # bytecode as an installed package has it (pip compiles it at install)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def speed(tmp: Path) -> dict[str, float]:
    data = tmp / "churn.csv"
    draw(ROWS, seed=0, strings=False, missing=False).to_csv(data, index=False)
    mlcicd = [sys.executable, "-m", "mlcicd_dagster.cli"]
    init = [*mlcicd, "init", "churn", "--data", str(data), "--label", "churned", "--force"]
    base = [sys.executable, "-c", f"import pandas as pd; pd.read_csv({str(data)!r})"]
    _wall(base, tmp)  # warm the file cache
    runs = [_wall(init, tmp) for _ in range(RUNS)]
    bases = [_wall(base, tmp) for _ in range(RUNS)]
    return {
        "wall": statistics.median(r[0] for r in runs),
        "cpu": statistics.median(r[1] for r in runs),
        "base_wall": statistics.median(b[0] for b in bases),
        "base_cpu": statistics.median(b[1] for b in bases),
        "load": os.getloadavg()[0],
    }


def simulate(tmp: Path, reps: int) -> dict[str, float]:
    import pandas as pd
    import yaml

    from mlcicd_dagster.models.config import GateConfig
    from mlcicd_dagster.models.gates import GateInputs, gate_non_inferiority
    from mlcicd_dagster.models.stats import wilson_interval
    from mlcicd_dagster.models.trainers import make_trainer

    folder = tmp / "assets" / "churn"
    cfg = GateConfig.from_yaml(folder / "gates.yaml")  # the label: from defs.yaml beside it
    golden = pd.read_csv(folder / "data" / "golden.csv.gz")
    defs = yaml.safe_load((folder / "defs.yaml").read_text())["attributes"]
    features = [*defs["features"]["numeric"], *defs["features"]["categorical"]]
    params = defs["training"]["params"]
    n_rest = ROWS - len(golden)
    holdout_n = int(0.2 * n_rest)
    train_n = n_rest - holdout_n

    def fit(seed: int, cols: list[str]):
        rows = draw(train_n, seed=seed, strings=False, missing=False)
        m = make_trainer("sklearn", params).fit(
            rows[cols], rows["churned"].to_numpy(), seed=seed, threads=1
        )
        return m.predictor

    honest = caught = 0
    for r in range(reps):
        champ, cand = fit(1000 + r, features), fit(2000 + r, features)
        worse = fit(3000 + r, ["tenure"])
        holdout = draw(holdout_n, seed=4000 + r, strings=False, missing=False)
        honest += gate_non_inferiority(
            GateInputs(cand, champ, holdout=holdout, golden=golden, config=cfg)
        ).passed
        caught += not gate_non_inferiority(
            GateInputs(worse, champ, holdout=holdout, golden=golden, config=cfg)
        ).passed
    z = 1.959964
    return {
        "reps": reps,
        "honest": honest / reps,
        "honest_ci": wilson_interval(honest, reps, z),
        "caught": caught / reps,
        "caught_ci": wilson_interval(caught, reps, z),
        "auc_margin": cfg.auc_margin,
        "logloss_margin": cfg.logloss_margin,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sp = speed(tmp)
        gates_text = (tmp / "assets" / "churn" / "gates.yaml").read_text()
        sim = simulate(tmp, args.reps)
    design = [ln[4:] for ln in gates_text.splitlines() if ln.startswith("#   ")][:-1]
    verdict = "pass" if sp["wall"] <= GOAL_S else "NOT MET"
    hl, hh = sim["honest_ci"]
    cl, ch = sim["caught_ci"]
    body = f"""`.venv/bin/python -m bench.bench_init --reps {args.reps}`: `mlcicd init` on a
{ROWS:,}-row synthetic file (tests/init/init_synth.py: light and heavy tails, negative
values, integer codes, a binary label), then the gates it wrote held to their design by
simulation on fresh draws of the same source.

| measure (median of {RUNS} fresh processes) | wall s | CPU s | wall / baseline |
|---|---|---|---|
| `python -c 'import pandas; pd.read_csv(FILE)'` (baseline) | {sp["base_wall"]:.2f} \
| {sp["base_cpu"]:.2f} | 1.00x |
| `mlcicd init churn --data FILE --label churned` | {sp["wall"]:.2f} | {sp["cpu"]:.2f} \
| {sp["wall"] / sp["base_wall"]:.1f}x |

Goal <= {GOAL_S:.0f} s wall: **{verdict}** (1-minute load average during the run:
{sp["load"]:.1f} on {os.cpu_count()} cores; CPU seconds are what the command costs on an
idle machine).

The design `init` wrote (gates.yaml):

{chr(10).join(f"- {ln}" for ln in design)}

Simulation ({sim["reps"]} repetitions; the production `gate_non_inferiority`, default
trainer, one thread):

| model judged against an honest champion | rate | Wilson 95% |
|---|---|---|
| honest retrain (fresh draw, same size): passes | {sim["honest"]:.1%} | {hl:.1%}..{hh:.1%} |
| clearly worse model (one feature): rejected | {sim["caught"]:.1%} | {cl:.1%}..{ch:.1%} |
"""
    write_section("bench_init", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
