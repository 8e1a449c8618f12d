"""Data bisect: which new batch(es) made a candidate fail, found by retraining on subsets.

A candidate trained on ``base + new`` (``base``: the champion's batches, ``new``: the
batches landed since) failed a gate that the champion passes. Blame is assigned by
adaptive group testing: a *trial* retrains on ``base + S`` for a subset ``S`` of
``new`` and reports whether that model passes. Halving the suspects finds one
culprit in ``ceil(log2 N)`` trials; one more trial on everything but the culprits
says whether they explain the failure (that model passes) or whether more remain,
in which case the search repeats on the rest. Results are cached by subset, so no
subset is ever trained twice.

Blame is what removal fixes: a culprit is a batch whose presence makes the trial
fail while the same data without it passes. Nothing is blamed unless that last
trial passes (``verified``); a failure that no subset reproduces, or needs two
batches together, is reported as ``inconclusive`` with its trials, never as a
culprit.

Pure and Dagster-free: the caller gives the trial function (real retrains in the
pipeline, see ``pipeline.bisect``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial's model did: passed the gate or not, and the numbers why."""

    passed: bool
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trial:
    included: list[str]  # the new batches trained on, beside the base
    passed: bool
    evidence: dict[str, Any]
    seconds: float
    retrained: bool = True  # False: known without training (the champion's own data)


@dataclass
class BisectResult:
    new_batches: list[str]
    culprits: list[str]
    verdict: str  # found | inconclusive | nothing_new
    explanation: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def retrains(self) -> int:
        return sum(1 for t in self.trials if t.retrained)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["retrains"] = self.retrains
        return d


def expected_retrains(n_new: int) -> int:
    """Retrains for one culprit among ``n_new`` batches: halving plus the check without it."""
    if n_new <= 1:
        return 0
    return math.ceil(math.log2(n_new)) + 1


def bisect_batches(
    new: Sequence[str],
    trial: Callable[[list[str]], TrialOutcome],
    *,
    max_trials: int | None = None,
) -> BisectResult:
    """Find the batches of ``new`` to blame for a failure of ``base + new``.

    ``trial(subset)`` retrains on ``base + subset`` and judges the model. The caller
    has already seen ``base + new`` fail (the rejected candidate) and ``base`` pass
    (the champion), so neither is retrained. ``max_trials`` bounds the retrains
    (default ``4 * ceil(log2 N) + 4``); running out is ``inconclusive``.
    """
    order = list(dict.fromkeys(new))
    result = BisectResult(new_batches=order, culprits=[], verdict="found", explanation="")
    if not order:
        result.verdict = "nothing_new"
        result.explanation = "no batch landed since the champion: the data is not to blame"
        return result
    budget = max_trials if max_trials is not None else 4 * math.ceil(math.log2(len(order) + 1)) + 4
    cache: dict[frozenset[str], bool] = {frozenset(): True}  # base alone: the champion passes

    def run(subset: list[str]) -> bool:
        key = frozenset(subset)
        if key in cache:
            return cache[key]
        if result.retrains >= budget:
            raise _OutOfTrials
        started = time.perf_counter()
        outcome = trial(sorted(subset, key=order.index))
        result.trials.append(
            Trial(
                included=sorted(subset, key=order.index),
                passed=bool(outcome.passed),
                evidence=dict(outcome.evidence),
                seconds=round(time.perf_counter() - started, 2),
            )
        )
        cache[key] = bool(outcome.passed)
        return cache[key]

    cleared: list[str] = []  # batches shown harmless (a passing trial held them)
    suspects = list(order)  # invariant: cleared + suspects fails
    cache[frozenset(order)] = False  # the rejected candidate itself
    try:
        while suspects:
            culprit = _one_culprit(cleared, suspects, run)
            result.culprits.append(culprit)
            rest = [b for b in suspects if b != culprit and b not in cleared]
            if run(cleared + rest):
                break  # without the culprits found so far, the model passes
            if not rest:
                break  # nothing left to blame: reported as inconclusive below
            suspects = rest  # removing it is not enough: another one is in the rest
    except _OutOfTrials:
        result.verdict = "inconclusive"
        result.explanation = (
            f"stopped after {result.retrains} retrains without a model that passes "
            f"without the suspects: {', '.join(result.culprits) or 'none yet'}"
        )
        result.culprits = []
        return result
    without = [b for b in order if b not in result.culprits]
    if cache.get(frozenset(without), False):
        result.explanation = (
            f"{len(result.culprits)} of {len(order)} new batch(es) to blame after "
            f"{result.retrains} retrain(s): trained without "
            f"{', '.join(result.culprits)} the model passes; with "
            f"{'it' if len(result.culprits) == 1 else 'them'} it fails"
        )
        return result
    result.verdict = "inconclusive"
    result.explanation = (
        "no set of batches whose removal makes the model pass was found "
        f"(suspects: {', '.join(result.culprits)}); an interaction of batches or a "
        "non-data cause: nothing is blamed"
    )
    result.culprits = []
    return result


class _OutOfTrials(Exception):
    pass


def _one_culprit(cleared: list[str], suspects: list[str], run: Callable[[list[str]], bool]) -> str:
    """Halve ``suspects`` (``cleared + suspects`` fails) down to one whose addition fails."""
    known_good = list(cleared)
    cand = [b for b in suspects if b not in cleared]
    while len(cand) > 1:
        half, other = cand[: len(cand) // 2], cand[len(cand) // 2 :]
        if run(known_good + half):
            known_good += half  # harmless with the cleared ones: the failure is in `other`
            cand = other
        else:
            cand = half
    cleared[:] = known_good
    return cand[0]
