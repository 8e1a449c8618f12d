"""The canary's latency guardrail holds under machine load: time-matched pairs.

Simulated canary traffic (5%, 25%, 50% steps) on a machine whose load grows and comes
in bursts (every call 3-10x slower for a while, plus single-call spikes): an equally
fast canary must not be rolled back more often than the guardrail's alpha, while a
canary twice as slow is rolled back. The unpaired (two-sample) comparison, which
confounds the canary's growing share with the growing load, is shown failing the first.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from mlcicd_dagster.rollout import analysis as an
from mlcicd_dagster.rollout.evidence import LATENCY_FLOOR_MS, _seconds

SPEC = next(m for m in an.DEFAULT_METRICS if m.name == "latency")
ALPHA = 0.05 / len(an.DEFAULT_METRICS)  # the guardrail's share of the rollback alpha


def _traffic(rng, n=1500, slowdown=1.0):
    ts = np.sort(rng.uniform(0, 600, n))
    load = 1.0 + ts / 200.0  # the machine gets busier as the rollout goes on (demo traffic)
    for start in rng.uniform(0, 600, 4):  # load bursts: everything 3-10x slower for 40 s
        load[(ts > start) & (ts < start + 40)] *= rng.uniform(3, 10)
    load *= np.where(rng.random(n) < 0.03, rng.uniform(5, 50, n), 1.0)  # single spikes
    share = np.select([ts < 200, ts < 400], [0.05, 0.25], 0.5)  # canary traffic steps
    canary = rng.random(n) < share
    base = rng.lognormal(math.log(12.0), 0.25, n)  # ~12 ms calls
    latency = base * load * np.where(canary, slowdown, 1.0)
    return ts, latency, canary


def _paired_verdict(ts, latency, canary):
    d = an.paired_latency_differences(
        ts[canary], latency[canary], ts[~canary], latency[~canary], LATENCY_FLOOR_MS
    )
    return an.judge_paired(SPEC, an.Moments.of(d), alpha_rollback=ALPHA, alpha_promote=0.05).verdict


def _unpaired_verdict(ts, latency, canary):
    lat = np.log(np.maximum(latency, LATENCY_FLOOR_MS))
    return an.judge_metric(
        SPEC,
        an.Moments.of(lat[canary]),
        an.Moments.of(lat[~canary]),
        alpha_rollback=ALPHA,
        alpha_promote=0.05,
    ).verdict


def test_equally_fast_canary_is_not_rolled_back_under_load():
    rng = np.random.default_rng(3)
    reps = 300
    paired = unpaired = 0
    for _ in range(reps):
        traffic = _traffic(rng)
        paired += _paired_verdict(*traffic) == an.ROLLBACK
        unpaired += _unpaired_verdict(*traffic) == an.ROLLBACK
    # not incompatible with the guardrail's alpha (one-sided binomial, p < 0.001)
    assert binom.sf(paired - 1, reps, ALPHA) >= 0.001, f"{paired}/{reps} false rollbacks"
    assert unpaired > paired  # what pairing buys on a loaded machine


def test_twice_as_slow_canary_is_rolled_back_under_load():
    rng = np.random.default_rng(4)
    verdicts = [_paired_verdict(*_traffic(rng, slowdown=2.0)) for _ in range(50)]
    assert verdicts.count(an.ROLLBACK) >= 48


def test_pairs_are_nearest_in_time_and_clipped():
    d = an.paired_latency_differences(
        np.array([10.0, 20.0]), np.array([20.0, 1000.0]),
        np.array([9.0, 30.0, 21.0]), np.array([10.0, 99.0, 10.0]), 5.0,
    )  # fmt: skip
    assert d[0] == pytest.approx(np.log(2.0))
    assert d[1] == an.LATENCY_PAIR_CLIP  # 100x: one spike counts as 4x at most
    ts = pd.Series(pd.to_datetime(["2026-01-01T00:00:01Z", "2026-01-01T00:00:03Z"]))
    assert np.allclose(np.diff(_seconds(ts)), 2.0)
