"""Simulation bench of the canary's guardrails on skewed data: false rollbacks, and power.

The guardrails (``analysis.DEFAULT_METRICS``) judge means of skewed values with the
plug-in Gaussian SPRT. In a small sample of right-skewed values a low mean comes with a
low sample variance, so the evidence for "the canary differs" is overstated just when
the sample is off; each guardrail's ``min_n_rollback`` (``analysis.DEFAULT_METRICS``)
keeps its votes to roll back out of that regime. Measured here, on the production rule
(``analysis.decide_arrays`` and ``paired_latency_differences``), against the generic
minimum of 20 per arm in the same run:

* ``prediction_shift``: predicted probabilities from beta distributions. Equal models
  (the same skewed distribution on both arms: any rollback is false) and a better model
  whose predictions are more spread than a weak stable's (mean shift 0.026, a quarter of
  the 0.10 margin, inside the indifference zone: a rollback is legal but unwanted). The
  two beta shapes are those of a credit model and of a model trained on shuffled labels
  (the fault suite's weak stable). And a model worse by the margin (mean shift 0.10).
* ``error_rate``: failed requests per arm (``Moments.bernoulli``: a pseudo-count keeps a
  clean record's variance finite). Equal models failing rarely, often, and in bursts (a
  worker restart fails a run of requests in a row, whichever arm they were sent to: the
  failures are not independent, as the test assumes); and a canary failing one request
  in a hundred more (the margin).
* ``latency``: request times of two equally fast models (and of a canary 25% slower, the
  margin) on one machine with episodes of load that slow every request inside them
  2-8x; times are paired by arrival as in production (a canary call caught in an
  episode is often paired with a stable call just outside it).

A canary sends ``CANARY_FRACTION`` of the traffic, is looked at every ``BATCH``
requests, up to ``HORIZON`` requests. Share of alpha_rollback per metric: 5% / 4.

Run: ``.venv/bin/python -m bench.bench_canary_guardrails`` (about a minute).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from mlcicd_dagster.rollout import analysis as an
from mlcicd_dagster.rollout.evidence import LATENCY_FLOOR_MS

SEED = 20261202
CANARY_FRACTION = 0.3
BATCH = 30  # requests between looks (0.5 s of the fault suite's 60 requests/s)
HORIZON = 2400  # requests in all
BASELINE_MIN_N = 20  # the generic minimum (MetricSpec's default)
ALPHA_RB = 0.05 / len(an.DEFAULT_METRICS)  # each metric's share (Bonferroni)


def guardrail_spec(name: str, min_n_rollback: int | None = None) -> an.MetricSpec:
    spec = next(m for m in an.DEFAULT_METRICS if m.name == name)
    return (
        spec if min_n_rollback is None else dataclasses.replace(spec, min_n_rollback=min_n_rollback)
    )


def beta_shape(mean: float, var: float) -> tuple[float, float]:
    k = mean * (1 - mean) / var - 1
    return mean * k, (1 - mean) * k


SHIFT_CASES = {  # name -> (canary beta, stable beta, a rollback is false)
    "equal, spread (credit model)": (beta_shape(0.20, 0.02), beta_shape(0.20, 0.02)),
    "equal, very skewed": (beta_shape(0.20, 0.046), beta_shape(0.20, 0.046)),
    "better, more spread than a weak stable": (beta_shape(0.20, 0.02), beta_shape(0.226, 0.0034)),
    "worse: shifted by the margin": (beta_shape(0.30, 0.02), beta_shape(0.20, 0.02)),
}


def shift_rollbacks(
    spec: an.MetricSpec, canary: tuple[float, float], stable: tuple[float, float],
    *, reps: int, seed: int = SEED,
) -> float:  # fmt: skip
    """Share of ``reps`` simulated canaries the shift guardrail rolls back (vectorised)."""
    rng = np.random.default_rng(seed)
    sums = {arm: np.zeros((3, reps)) for arm in ("canary", "stable")}  # n, sum, sum of squares
    decided = np.zeros(reps, int)
    for _ in range(HORIZON // BATCH):
        n_c = rng.binomial(BATCH, CANARY_FRACTION, reps)
        for arm, shape, n in (("canary", canary, n_c), ("stable", stable, BATCH - n_c)):
            x = rng.beta(*shape, size=(reps, BATCH))
            x[np.arange(BATCH)[None, :] >= n[:, None]] = 0.0
            sums[arm] += (n, x.sum(1), (x * x).sum(1))
        (nc, sc, qc), (ns, ss, qs) = sums["canary"], sums["stable"]
        mc, ms = sc / np.maximum(nc, 1), ss / np.maximum(ns, 1)
        vc = (qc - nc * mc**2) / np.maximum(nc - 1, 1)
        vs = (qs - ns * ms**2) / np.maximum(ns - 1, 1)
        var = np.where((nc > 1) & (ns > 1), vc / np.maximum(nc, 1) + vs / np.maximum(ns, 1), 1e18)
        d = an.decide_arrays(spec, mc - ms, var, np.minimum(nc, ns),
                             alpha_rollback=ALPHA_RB, alpha_promote=0.05)  # fmt: skip
        new = (decided == 0) & (d != 0)
        decided[new] = d[new]
    return float(np.mean(decided == -1))


ERROR_CASES = {  # name -> (canary failure rate, stable failure rate, burst length, requests)
    "equal, rare failures (0.2%)": (0.002, 0.002, 1, HORIZON),
    "equal, frequent failures (3%)": (0.03, 0.03, 1, HORIZON),
    "equal, failures in bursts of 10 (1%)": (0.01, 0.01, 10, HORIZON),
    "worse: a broken canary failing 10% (stable 0.2%)": (0.10, 0.002, 1, HORIZON),
    "worse: one more failure in a hundred (the margin), 10x as long": (0.03, 0.02, 1, 24000),
}


def error_rollbacks(
    spec: an.MetricSpec, canary: float, stable: float, burst: int = 1, requests: int = HORIZON,
    *, reps: int, seed: int = SEED,
) -> float:  # fmt: skip
    """Share of ``reps`` canaries the error-rate guardrail rolls back within ``requests``.
    Failures start at rate ``p / burst`` per request and fail ``burst`` requests in a row,
    on either arm."""
    rng = np.random.default_rng(seed)
    decided = np.zeros(reps, int)
    counts = np.zeros((4, reps))  # canary n, stable n, canary failures, stable failures
    carry = np.zeros(reps, int)  # requests still to fail from a burst begun earlier
    for _ in range(requests // BATCH):
        to_canary = rng.random((reps, BATCH)) < CANARY_FRACTION
        starts = rng.random((reps, BATCH)) < np.where(to_canary, canary, stable) / burst
        failed = np.zeros((reps, BATCH), bool)
        for i in range(BATCH):  # a burst fails its first request and the next burst-1
            carry = np.where(starts[:, i], np.maximum(carry, burst), carry)
            failed[:, i] = carry > 0
            carry = np.maximum(carry - 1, 0)
        counts += (to_canary.sum(1), (~to_canary).sum(1),
                   (failed & to_canary).sum(1), (failed & ~to_canary).sum(1))  # fmt: skip
        nc, ns, ec, es = counts
        pc = (ec + an.BERNOULLI_PSEUDO) / (nc + 2 * an.BERNOULLI_PSEUDO)
        ps = (es + an.BERNOULLI_PSEUDO) / (ns + 2 * an.BERNOULLI_PSEUDO)
        var = pc * (1 - pc) / np.maximum(nc, 1) + ps * (1 - ps) / np.maximum(ns, 1)
        d = an.decide_arrays(spec, ec / np.maximum(nc, 1) - es / np.maximum(ns, 1), var,
                             np.minimum(nc, ns), alpha_rollback=ALPHA_RB,
                             alpha_promote=0.05)  # fmt: skip
        new = (decided == 0) & (d != 0)
        decided[new] = d[new]
    return float(np.mean(decided == -1))


def _latency_stream(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times (s) and request times (ms) of ``n`` requests to equally fast models:
    6 ms with log-normal noise, and episodes of machine load (a tick, a garbage collection;
    3% of requests start one, lasting 20-200 ms) that slow every request inside them 2-8x."""
    ts = np.cumsum(rng.exponential(1 / 60.0, n))
    load = np.zeros(n)
    for i in np.flatnonzero(rng.random(n) < 0.03):
        inside = (ts >= ts[i]) & (ts < ts[i] + rng.uniform(0.02, 0.2))
        load[inside] = np.maximum(load[inside], rng.uniform(math.log(2), math.log(8)))
    ms = 6.0 * np.exp(rng.normal(0.0, 0.3, n) + load)
    return ts, ms


def latency_rollbacks(
    spec: an.MetricSpec, *, reps: int, slower: float = 1.0, seed: int = SEED
) -> float:
    """Share of ``reps`` canaries the latency guardrail rolls back, of a model ``slower``
    times as slow as the stable one (1.0: equally fast)."""
    rng = np.random.default_rng(seed)
    rolled = 0
    for _ in range(reps):
        ts, ms = _latency_stream(rng, HORIZON)
        canary = rng.random(HORIZON) < CANARY_FRACTION
        ms = np.where(canary, ms * slower, ms)
        for end in range(BATCH, HORIZON + 1, BATCH):
            c, s = canary[:end], ~canary[:end]
            d = an.paired_latency_differences(ts[:end][c], ms[:end][c], ts[:end][s],
                                              ms[:end][s], LATENCY_FLOOR_MS)  # fmt: skip
            v = an.judge_paired(spec, an.Moments.of(d), alpha_rollback=ALPHA_RB,
                                alpha_promote=0.05)  # fmt: skip
            if v.verdict == an.ROLLBACK:
                rolled += 1
                break
    return rolled / reps


def guardrail_rates(*, shift_reps: int, latency_reps: int) -> list[dict[str, object]]:
    """One row per (guardrail, case): false-rollback share with the production minimum and
    with the generic minimum of 20 per arm, on the same simulated traffic."""
    shift, latency = guardrail_spec("prediction_shift"), guardrail_spec("latency")
    shift_20 = guardrail_spec("prediction_shift", BASELINE_MIN_N)
    latency_20 = guardrail_spec("latency", BASELINE_MIN_N)
    rows: list[dict[str, object]] = []
    for case, (canary, stable) in SHIFT_CASES.items():
        rows.append({
            "metric": shift.name, "case": case, "min_n": shift.min_n_rollback,
            "rate": shift_rollbacks(shift, canary, stable, reps=shift_reps),
            "baseline": shift_rollbacks(shift_20, canary, stable, reps=shift_reps),
        })  # fmt: skip
    errors = guardrail_spec("error_rate")
    for case, (canary_p, stable_p, burst, requests) in ERROR_CASES.items():
        rows.append({
            "metric": errors.name, "case": case, "min_n": errors.min_n_rollback,
            "rate": error_rollbacks(errors, canary_p, stable_p, burst, requests,
                                    reps=shift_reps),
            "baseline": float("nan"),  # its minimum is the generic one
        })  # fmt: skip
    slower = math.exp(latency.margin)
    for case, factor in (("equal, one loaded machine", 1.0),
                         (f"worse: {slower:.2f}x as slow (the margin)", slower)):  # fmt: skip
        rows.append({
            "metric": latency.name, "case": case, "min_n": latency.min_n_rollback,
            "rate": latency_rollbacks(latency, reps=latency_reps, slower=factor),
            "baseline": latency_rollbacks(latency_20, reps=latency_reps, slower=factor),
        })  # fmt: skip
    return rows


def main() -> None:
    t0 = time.perf_counter()
    shift_reps, latency_reps = 8000, 1500
    rows = guardrail_rates(shift_reps=shift_reps, latency_reps=latency_reps)
    table = "\n".join(
        f"| {r['metric']} | {r['case']} | {r['min_n']} | {r['rate']:.2%} | "
        f"{'-' if math.isnan(float(r['baseline'])) else format(float(r['baseline']), '.2%')} |"  # type: ignore[arg-type]
        for r in rows
    )
    equal = [r for r in rows if str(r["case"]).startswith("equal")]
    worse = [r for r in rows if str(r["case"]).startswith("worse")]
    to_canary = round(HORIZON * CANARY_FRACTION)
    caught = "; ".join(
        f"{r['metric']} {r['rate']:.2%} ({str(r['case']).split(': ', 1)[1]})" for r in worse
    )
    ok = all(float(r["rate"]) <= ALPHA_RB for r in equal)  # type: ignore[arg-type]
    body = f"""
Command: `.venv/bin/python -m bench.bench_canary_guardrails` ({time.perf_counter() - t0:.0f} s)

Share of simulated canaries each guardrail rolls back ({shift_reps} per shift and error row,
{latency_reps} per latency row; {CANARY_FRACTION:.0%} canary traffic, a look every {BATCH} requests,
{HORIZON} requests). `min_n` is the guardrail's `min_n_rollback` (per arm); the last column is
the same traffic judged with the generic minimum of {BASELINE_MIN_N}. Each guardrail's share of
alpha_rollback is {ALPHA_RB:.2%}; for equal models every rollback is false.

| guardrail | models | min_n | rollback | with min {BASELINE_MIN_N} |
|---|---|---|---|---|
{table}

- Equal models within each guardrail's share: **{"PASS" if ok else "FAIL"}**. Worse models
  caught: {caught}.
- The "better, more spread" row is a model inside the indifference zone (a quarter of the
  margin), where either verdict is allowed; it is how often a good canary is lost to a
  weak stable's narrow predictions.
- `error_rate` keeps the generic minimum (no second column): a failure is a rare event,
  and with the pseudo-count a few early failures are weak evidence against a margin of
  one in a hundred. Failures in bursts break the independence the test assumes; at this
  margin it costs nothing measurable. Its power at the margin needs a long canary (the
  10x row: {10 * to_canary} canary requests); a broken canary is caught at once.
- The other "worse" rows are models off by exactly the margin: a rollback is right, and
  the share is the guardrail's power within {HORIZON} requests (about {to_canary} to the
  canary; the error rate's margin row, 10x as many). The larger minimum costs no power
  here, only time: no rollback vote before `min_n` requests per arm (at 60 requests/s and
  a 30% canary, 200 canary requests take about 11 s).
"""
    print(body)
    from bench._report import write_section

    write_section("bench_canary_guardrails", body)


if __name__ == "__main__":
    main()
