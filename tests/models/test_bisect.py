"""Data bisect: the search on known answers, then on real small retrains."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
from tests_support import DATA

from mlcicd_dagster.models.bisect import (
    TrialOutcome,
    bisect_batches,
    expected_retrains,
)

LABEL = "default.payment.next.month"


def _oracle(bad: set[str], *, together: bool = False):
    """A trial that fails when the subset holds a bad batch (or all of them, ``together``)."""
    calls: list[list[str]] = []

    def trial(subset: list[str]) -> TrialOutcome:
        calls.append(subset)
        hit = bad <= set(subset) if together else bool(bad & set(subset))
        return TrialOutcome(passed=not hit, evidence={"n": len(subset)})

    return trial, calls


@pytest.mark.parametrize("n", [2, 3, 4, 7, 8, 16, 33])
def test_one_culprit_among_n_takes_about_log2_n_retrains(n):
    names = [f"b{i:02d}" for i in range(n)]
    for culprit in (names[0], names[n // 2], names[-1]):
        trial, calls = _oracle({culprit})
        result = bisect_batches(names, trial)
        assert result.verdict == "found" and result.culprits == [culprit]
        assert result.retrains == len(calls) <= math.ceil(math.log2(n)) + 1
        assert result.retrains <= expected_retrains(n)
        assert len({frozenset(c) for c in calls}) == len(calls)  # no subset trained twice


def test_a_single_new_batch_is_blamed_without_a_retrain():
    trial, calls = _oracle({"only"})
    result = bisect_batches(["only"], trial)
    assert result.culprits == ["only"] and result.retrains == 0 and not calls


def test_two_culprits_are_both_found_and_removing_them_is_verified():
    names = [f"b{i}" for i in range(8)]
    trial, calls = _oracle({"b1", "b6"})
    result = bisect_batches(names, trial)
    assert result.verdict == "found" and sorted(result.culprits) == ["b1", "b6"]
    last_pass = [t for t in result.trials if t.passed][-1]
    assert set(last_pass.included) == set(names) - {"b1", "b6"}
    assert "to blame" in result.explanation


def test_nothing_new_blames_nothing():
    result = bisect_batches([], lambda s: TrialOutcome(True))
    assert result.verdict == "nothing_new" and result.culprits == []


def test_a_budget_that_runs_out_is_inconclusive_and_blames_nothing():
    names = [f"b{i}" for i in range(16)]
    trial, _ = _oracle({"b3"})
    result = bisect_batches(names, trial, max_trials=2)
    assert result.verdict == "inconclusive" and result.culprits == []
    assert result.retrains == 2


def test_blame_is_what_removal_fixes_when_two_batches_fail_only_together():
    trial, _ = _oracle({"a", "b"}, together=True)
    result = bisect_batches(["a", "b", "c", "d"], trial)
    # without b the model passes (a alone is harmless): b is blamed, a is kept
    assert result.verdict == "found" and result.culprits == ["b"]
    assert [t.included for t in result.trials if t.passed][-1] == ["a", "c", "d"]


def test_when_every_batch_fails_on_its_own_every_batch_is_blamed():
    result = bisect_batches(["a", "b", "c"], lambda s: TrialOutcome(passed=not s))
    assert result.verdict == "found" and result.culprits == ["a", "b", "c"]


# -- real retrains -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_trial():
    """Base: 3,000 honest rows (the champion); new: 4 batches of 700, one with labels inverted."""
    from assets.credit_default import SPEC
    from mlcicd_dagster.pipeline.bisect import GoldenJudge

    pool = pd.read_csv(DATA / "pool.csv.gz").sample(frac=1.0, random_state=11)
    pool = pool.reset_index(drop=True)
    base = pool.iloc[:3000]
    batches = {f"2006-0{i + 1}.csv": pool.iloc[3000 + 700 * i : 3700 + 700 * i] for i in range(4)}
    poisoned = batches["2006-03.csv"].copy()
    poisoned[LABEL] = 1 - poisoned[LABEL]
    batches["2006-03.csv"] = poisoned
    features = list(SPEC.features)

    # small retrains: seconds, not minutes
    spec = dataclasses.replace(SPEC, trainer_params={**SPEC.trainer_params, "max_iter": 40})

    def fit(frame):
        return spec.make_trainer().fit(frame[features], frame[LABEL], seed=0).predictor

    judge = GoldenJudge(SPEC, fit(base))
    seen: list[list[str]] = []

    def trial(subset: list[str]) -> TrialOutcome:
        seen.append(subset)
        return judge(fit(pd.concat([base, *(batches[k] for k in subset)], ignore_index=True)))

    return trial, list(batches), seen


def test_real_retrains_find_the_batch_with_inverted_labels(real_trial):
    trial, names, seen = real_trial
    result = bisect_batches(names, trial)
    assert result.verdict == "found", result.explanation
    assert result.culprits == ["2006-03.csv"]
    assert result.retrains == len(seen) <= 3  # log2(4) + 1
    failing = [t for t in result.trials if not t.passed]
    assert failing and all("2006-03.csv" in t.included for t in failing)
    # the evidence is the golden-set numbers of the gate; honest data passes
    assert any(k.startswith("golden_AUC") for k in failing[0].evidence)
    passing = [t for t in result.trials if t.passed]
    assert passing and all("2006-03.csv" not in t.included for t in passing)
