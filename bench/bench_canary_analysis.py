"""Simulation bench of the canary analysis: error rates under repeated looks, and speed.

4,000 simulated canaries each of an equal, a worse and a better model (per-request
0/1 loss, e.g. misclassification: stable 20%, worse canary 20% + margin, better
20% - margin), looked at after every batch of traffic, for three look frequencies.
Three rules on the same simulated traffic:

* ``sequential``: the production rule (``analysis.decide_arrays``: SPRT, plug-in
  variance, min-sample guard); undecided at the maximum horizon -> rollback.
* ``naive``: the fixed-horizon 5% z-tests re-checked at every look (what
  threshold-based canary tools do).
* ``fixed``: the fixed-horizon test with the same error rates (alpha = beta = 5%),
  decided once at its sample size: the baseline for samples-to-decision.

Run: ``.venv/bin/python -m bench.bench_canary_analysis`` (about 10 s).
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.stats import norm

from mlcicd_dagster.rollout import analysis as an

REPS = 4000  # >= 1,000 per row: the error rates sit near 4.8%, so the noise must be small
P_STABLE = 0.20
MARGIN = 0.03
ALPHA = 0.05
BATCHES = (10, 50, 250)  # requests per arm between looks: many looks ... few looks
SEED = 20240601
SPEC = an.MetricSpec("loss", margin=MARGIN, min_n=100)
SCENARIOS = {"equal": P_STABLE, "worse": P_STABLE + MARGIN, "better": P_STABLE - MARGIN}
TABLE_HEAD = (
    "| batch | looks (max) | model | seq. promote | seq. rollback | naive promote "
    "| naive rollback | seq. median n/arm | / fixed n |\n|---|---|---|---|---|---|---|---|---|"
)
WRONG = {"equal": -1, "worse": +1}  # the decision that is an error in each scenario


def _var(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    p = (k + an.BERNOULLI_PSEUDO) / (n + 2 * an.BERNOULLI_PSEUDO)
    return p * (1 - p) / n


def simulate(p_canary: float, batch: int, horizon: int, rng: np.random.Generator) -> dict:
    """Decisions (-1/0/+1) and samples-per-arm at decision for the sequential and naive rules."""
    looks = math.ceil(horizon / batch)
    kc = np.zeros(REPS)
    ks = np.zeros(REPS)
    seq = np.zeros(REPS, int)
    seq_n = np.full(REPS, float(looks * batch))
    naive = np.zeros(REPS, int)
    z = norm.ppf(1 - ALPHA)
    for look in range(1, looks + 1):
        n = look * batch
        kc += rng.binomial(batch, p_canary, REPS)
        ks += rng.binomial(batch, P_STABLE, REPS)
        diff = (kc - ks) / n
        var = _var(kc, np.full(REPS, n)) + _var(ks, np.full(REPS, n))
        d = an.decide_arrays(SPEC, diff, var, np.full(REPS, n),
                             alpha_rollback=ALPHA, alpha_promote=ALPHA)  # fmt: skip
        new = (seq == 0) & (d != 0)
        seq[new] = d[new]
        seq_n[new] = n
        se = np.sqrt(var)
        nv = np.where(diff / se >= z, -1, np.where((diff - MARGIN) / se <= -z, 1, 0))
        newn = (naive == 0) & (nv != 0)
        naive[newn] = nv[newn]
    seq[seq == 0] = -1  # maximum duration: rollback unless evidence said otherwise
    return {"seq": seq, "seq_n": seq_n, "naive": naive, "looks": looks}


def _upper(rate: float) -> float:
    """Upper end of the 95% Clopper-Pearson interval of a rate measured on REPS runs."""
    from scipy.stats import beta

    k = round(rate * REPS)
    return 1.0 if k >= REPS else float(beta.ppf(0.975, k + 1, REPS - k))


def fixed_test(p_canary: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """The one-look test at n per arm: promote when diff < margin / 2 (alpha = beta)."""
    kc = rng.binomial(n, p_canary, REPS)
    ks = rng.binomial(n, P_STABLE, REPS)
    return np.where((kc - ks) / n < MARGIN / 2, 1, -1)


def main() -> None:
    t0 = time.perf_counter()
    rng = np.random.default_rng(SEED)
    sigma = math.sqrt(P_STABLE * (1 - P_STABLE) + (P_STABLE + MARGIN) * (1 - P_STABLE - MARGIN))
    sigma /= math.sqrt(2)  # average per-observation sd across the two hypotheses
    n_fixed = math.ceil(an.fixed_horizon_n(sigma, MARGIN, ALPHA, ALPHA))
    horizon = 4 * n_fixed
    rows = []
    medians: dict[str, list[float]] = {k: [] for k in SCENARIOS}
    worst = {"seq": 0.0, "naive": 0.0}
    worst_hi = 0.0
    for batch in BATCHES:
        for name, p in SCENARIOS.items():
            r = simulate(p, batch, horizon, rng)
            promote = float(np.mean(r["seq"] == 1))
            rollback = float(np.mean(r["seq"] == -1))
            n_promote = float(np.mean(r["naive"] == 1))
            n_rollback = float(np.mean(r["naive"] == -1))
            med = float(np.median(r["seq_n"]))
            medians[name].append(med / n_fixed)
            if name in WRONG:
                err = promote if WRONG[name] == 1 else rollback
                nerr = n_promote if WRONG[name] == 1 else n_rollback
                worst["seq"] = max(worst["seq"], err)
                worst_hi = max(worst_hi, _upper(err))
                worst["naive"] = max(worst["naive"], nerr)
            rows.append(
                f"| {batch} | {r['looks']} | {name} | {promote:.1%} | {rollback:.1%} | "
                f"{n_promote:.1%} | {n_rollback:.1%} | {med:.0f} | {med / n_fixed:.2f} |"
            )
    fixed_err = {
        "equal": float(np.mean(fixed_test(SCENARIOS["equal"], n_fixed, rng) == -1)),
        "worse": float(np.mean(fixed_test(SCENARIOS["worse"], n_fixed, rng) == 1)),
    }
    elapsed = time.perf_counter() - t0
    worst_ratio = max(max(v) for k, v in medians.items() if k in WRONG)
    all_ratio = max(max(v) for v in medians.values())
    ok_err = worst["seq"] <= ALPHA
    ok_speed = all_ratio <= 0.5
    body = f"""
Command: `.venv/bin/python -m bench.bench_canary_analysis` ({elapsed:.1f} s)

{REPS} simulated canaries per row; per-request 0/1 loss, stable {P_STABLE:.0%}, worse =
+{MARGIN:.0%} (the margin), better = -{MARGIN:.0%}; equal traffic per arm, a look after every
`batch` requests per arm, horizon {horizon} per arm (4x the fixed test), undecided at the
horizon = rollback (maximum duration). `sequential` = the production rule
(`mlcicd_dagster.rollout.analysis.decide_arrays`: SPRT, alpha = 5% each way, min 100 per arm);
`naive` = the same 5% z-tests re-checked at every look. Fixed-horizon test with the same error
rates (alpha = beta = 5%): **{n_fixed} per arm**; its simulated errors here: false rollback
{fixed_err["equal"]:.1%}, false promotion {fixed_err["worse"]:.1%}.

{TABLE_HEAD}
{chr(10).join(rows)}

- Worst error of the sequential rule over all look frequencies: **{worst["seq"]:.1%}**
  (95% interval up to {worst_hi:.1%}; false promotion of a worse model or false rollback of
  an equal one; goal <= 5%: **{"PASS" if ok_err else "FAIL"}**). Theory for continuous
  monitoring at the boundary: alpha / (1 + alpha) = {ALPHA / (1 + ALPHA):.2%}; discrete
  looks overshoot the threshold and land below it. Naive rule beside it:
  **{worst["naive"]:.1%}**, growing with the number of looks.
- Median samples to a decision / fixed-horizon n: at most **{all_ratio:.2f}** over all
  scenarios ({worst_ratio:.2f} for the equal and worse models, which sit on the boundaries
  of the indifference zone, the hardest case); goal <= 0.50: **{"PASS" if ok_speed else "FAIL"}**.
"""
    print(body)
    from bench._report import write_section

    write_section("bench_canary_analysis", body)


if __name__ == "__main__":
    main()
