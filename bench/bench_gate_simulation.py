"""Error rates of the non-inferiority gate, larger than the in-suite simulation.

    .venv/bin/python -m bench.bench_gate_simulation [--reps 2000] [--real 5]

1. Synthetic (scores and labels simulated, as in tests/models/test_gate_statistics.py):
   equal models (rejection vs the planned rate), a model worse by exactly the AUC
   margin (pass rate vs alpha: the error the gate controls), a clearly worse model.
2. Real models on credit_default: candidates retrained with another seed on another
   random 90% of the training rows (equal quality) vs the champion, and candidates
   trained with labels flipped where the signal is strongest (PAY_0 >= 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench._report import write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))
LABEL = "default.payment.next.month"


def synthetic(reps: int) -> list[tuple[str, int, int, str]]:
    import test_gate_statistics as sim  # the in-suite simulation, reused at scale

    rng = np.random.default_rng(11)
    cfg = sim.CFG
    out = []
    rej, plan = 0, []
    for _ in range(reps):
        r = sim._judge(rng, 0.15, 0.15, cfg)
        rej += not r.passed
        plan.append(r.numbers["design_false_rejection_total"])
    out.append(("equal quality: wrongly rejected", rej, reps, f"planned {np.mean(plan):.3f}"))
    boundary = sim._noise_for_auc_drop(0.15, cfg.auc_margin)
    passed = sum(sim._judge(rng, 0.15, boundary, cfg).passed for _ in range(reps))
    out.append(("worse by the margin: wrongly passed", passed, reps, f"alpha {cfg.alpha}"))
    worse = sim._noise_for_auc_drop(0.15, 0.06)
    rej = sum(not sim._judge(rng, 0.15, worse, cfg).passed for _ in range(reps))
    out.append(("clearly worse (AUC -0.06): rejected", rej, reps, "goal >= 0.95"))
    return out


def real(n: int) -> list[tuple[str, int, int, str]]:
    from mlcicd_dagster.models.config import load_gate_config
    from mlcicd_dagster.models.gates import run_all_gates
    from mlcicd_dagster.models.trainers import SklearnTrainer

    data = ROOT / "assets" / "credit_default"
    pool = pd.read_csv(data / "data" / "pool.csv.gz")
    golden = pd.read_csv(data / "data" / "golden.csv.gz")
    feats = [c for c in pool.columns if c not in ("ID", LABEL)]
    pay = [c for c in feats if c.startswith("PAY_") and not c.startswith("PAY_AMT")]
    train, holdout = pool.iloc[:16000], pool.iloc[16000:]
    cfg = load_gate_config(data / "gates.yaml")
    champ = SklearnTrainer(monotonic_increase=pay).fit(train[feats], train[LABEL], seed=0)

    def judge(pred):
        return run_all_gates(
            pred,
            champ.predictor,
            holdout=holdout,
            golden=golden,
            config=cfg,
            only=["non_inferiority"],
        )[0]

    rej_eq = rej_bad = 0
    for i in range(n):
        sub = train.sample(frac=0.9, random_state=100 + i)
        eq = SklearnTrainer(monotonic_increase=pay).fit(sub[feats], sub[LABEL], seed=100 + i)
        rej_eq += not judge(eq.predictor).passed
        bad = sub.copy()
        strong = bad["PAY_0"] >= 2
        bad.loc[strong, LABEL] = 1 - bad.loc[strong, LABEL]
        worse = SklearnTrainer(monotonic_increase=pay).fit(bad[feats], bad[LABEL], seed=100 + i)
        rej_bad += not judge(worse.predictor).passed
    return [
        ("real: retrained (seed, 90% rows): wrongly rejected", rej_eq, n, ""),
        ("real: labels flipped where PAY_0 >= 2: rejected", rej_bad, n, ""),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--real", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlcicd_dagster.models.stats import binomial_lower, binomial_upper

    t0 = time.perf_counter()
    rows = synthetic(args.reps) + (real(args.real) if args.real else [])
    elapsed = time.perf_counter() - t0
    lines = ["| scenario | count | rate | 95% CI | reference |", "|---|---|---|---|---|"]
    for name, k, n, ref in rows:
        lo, hi = binomial_lower(k, n, 0.975), binomial_upper(k, n, 0.975)
        lines.append(f"| {name} | {k}/{n} | {k / n:.3f} | [{lo:.3f}, {hi:.3f}] | {ref} |")
        print(f"{name}: {k}/{n} = {k / n:.3f} [{lo:.3f}, {hi:.3f}] {ref}")
    write_section(
        "bench_gate_simulation",
        f"Command: `.venv/bin/python -m bench.bench_gate_simulation --reps {args.reps} "
        f"--real {args.real}` ({elapsed:.0f} s)\n\n"
        "Non-inferiority gate (alpha 0.05 one-sided, AUC margin 0.02, log-loss margin 0.01, "
        "holdout 1,500 + golden 1,000 rows synthetic; real: 2,000 + 2,000 rows).\n\n"
        + "\n".join(lines),
    )


if __name__ == "__main__":
    main()
