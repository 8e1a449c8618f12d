"""Drift: the false-alarm rate it claims (by simulation), power on real shifts, the effect floor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from data_support import LABEL
from scipy.stats import binom

from mlcicd_dagster.data.drift import ReferenceProfile, adjust_pvalues, drift_report

NUMERIC = (
    ["LIMIT_BAL", "AGE"]
    + [f"BILL_AMT{i}" for i in range(1, 7)]
    + [f"PAY_AMT{i}" for i in range(1, 7)]
)
CATEGORICAL = ["SEX", "EDUCATION", "MARRIAGE", "PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6"]
ALPHA = 0.05
TRIALS = 200
#: Flake probability of the bound below, were the true alarm rate exactly alpha.
TAIL = 1e-4


def _bound() -> int:
    """Largest alarm count compatible with a rate <= ALPHA (one-sided binomial, P = TAIL)."""
    return int(binom.ppf(1 - TAIL, TRIALS, ALPHA))


@pytest.mark.parametrize("correction", ["holm", "bh"])
def test_false_alarm_rate_is_within_alpha_on_null_batches(pool, correction) -> None:
    """200 batches drawn from the reference distribution: alarms stay within the planned rate.

    Each trial draws a fresh reference sample and an independent batch, both i.i.d.
    from the real data's empirical distribution, so trials are independent Bernoulli
    draws with P(alarm) <= alpha under the documented guarantee. The effect floor is
    switched off: this tests the statistics alone (the floor only removes alarms).
    """
    rng = np.random.default_rng(20240501)
    values = pool[NUMERIC + CATEGORICAL + [LABEL]].to_numpy()
    cols = NUMERIC + CATEGORICAL + [LABEL]
    alarms = 0
    alarms_with_floor = 0
    for _ in range(TRIALS):
        ref = pd.DataFrame(values[rng.integers(0, len(values), 3000)], columns=cols)
        cur = pd.DataFrame(values[rng.integers(0, len(values), 500)], columns=cols)
        profile = ReferenceProfile.from_frame(
            ref,
            numeric=NUMERIC,
            categorical=CATEGORICAL,
            label=LABEL,
            seed=int(rng.integers(1 << 30)),
        )
        report = profile.compare(
            cur, alpha=ALPHA, correction=correction, psi_floor=0.0, label_floor=0.0
        )
        alarms += report.alarm
        alarms_with_floor += profile.compare(cur, alpha=ALPHA, correction=correction).alarm
    assert alarms <= _bound(), f"{alarms}/{TRIALS} null batches alarmed (bound {_bound()})"
    assert alarms_with_floor <= alarms


def test_detects_real_shifts_and_names_the_feature(pool) -> None:
    ref = pool.iloc[:8000]
    cur = pool.iloc[8000:9000].copy()
    assert not drift_report(ref, cur, numeric=NUMERIC, categorical=CATEGORICAL, label=LABEL).alarm
    older = cur.assign(AGE=cur.AGE + 12)
    rep = drift_report(ref, older, numeric=NUMERIC, categorical=CATEGORICAL, label=LABEL)
    assert rep.alarm and [r.feature for r in rep.drifted] == ["AGE"]
    assert rep.severity == "WARN" and not rep.blocking
    # Label shift: default rate doubled.
    flipped = cur.copy()
    zeros = flipped.index[flipped[LABEL] == 0][:250]
    flipped.loc[zeros, LABEL] = 1
    rep2 = drift_report(
        ref, flipped, numeric=NUMERIC, categorical=CATEGORICAL, label=LABEL, block_on=[LABEL]
    )
    assert [r.feature for r in rep2.drifted] == [LABEL]
    assert rep2.blocking and rep2.severity == "ERROR"
    # A new category code is a categorical drift.
    coded = cur.copy()
    coded.loc[coded.index[:300], "EDUCATION"] = 9
    rep3 = drift_report(ref, coded, numeric=NUMERIC, categorical=CATEGORICAL)
    edu = next(r for r in rep3.rows if r.feature == "EDUCATION")
    assert edu.drifted and "unseen" in edu.note


def test_effect_floor_keeps_large_batches_from_trivial_alarms(pool) -> None:
    rng = np.random.default_rng(3)
    ref = pool.sample(20000, replace=True, random_state=1)
    big = pool.sample(200_000, replace=True, random_state=2).copy()
    big["LIMIT_BAL"] = big["LIMIT_BAL"] * 1.03 + rng.normal(0, 1, len(big))  # 3%: trivial
    kw = dict(numeric=["LIMIT_BAL"], categorical=[], label=None)
    no_floor = drift_report(ref, big, psi_floor=0.0, **kw)
    assert no_floor.alarm  # statistically significant with 200k rows ...
    with_floor = drift_report(ref, big, **kw)
    assert not with_floor.alarm  # ... but below the PSI floor: no alarm
    row = with_floor.rows[0]
    assert row.p_adjusted is not None and row.p_adjusted < ALPHA and row.effect < row.floor


def test_adjusted_pvalues_holm_and_bh() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    holm = adjust_pvalues(p, "holm")
    np.testing.assert_allclose(holm[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm[4])
    bh = adjust_pvalues(p, "bh")
    np.testing.assert_allclose(bh[:4], [0.02, 0.04, 0.04, 0.02])
    with pytest.raises(ValueError):
        adjust_pvalues(p, "bonferonni")


def test_profile_save_load_roundtrip_and_metadata(pool, tmp_path) -> None:
    ref, cur = pool.iloc[:5000], pool.iloc[5000:6000].assign(AGE=lambda d: d.AGE + 10)
    prof = ReferenceProfile.from_frame(ref, numeric=NUMERIC, categorical=CATEGORICAL, label=LABEL)
    path = tmp_path / "ref.npz"
    prof.save(path)
    loaded = ReferenceProfile.load(path)
    a, b = prof.compare(cur), loaded.compare(cur)
    assert [r.to_dict() for r in a.rows] == [r.to_dict() for r in b.rows]
    md = a.to_metadata()
    assert md["drift_alarm"].value is True
    assert md["drift"].records[0].data["feature"] == "AGE"
    missing = prof.compare(cur.drop(columns=["AGE"]).head(10))
    assert not missing.alarm
    assert any("missing" in r.note for r in missing.rows)
    assert any("fewer than" in r.note for r in missing.rows)
