"""The gates' error rates on real data, by simulation (what the design promises, checked).

Each replicate draws two disjoint batches from a pool of real labelled rows (the
champion's batch and a new one, ``champion_rows`` and ``batch_rows``), splits each
into train and holdout as the pipeline does (``holdout_fraction``), and trains with the
pipeline's own trainer:

* the champion on the first batch's training rows;
* an *honest* candidate on both batches (a routine retrain: the gates should pass it);
* a *corrupted* candidate on both batches with the new batch's labels inverted
  (training and holdout rows alike, as a poisoned batch lands in the lake): a clearly
  worse model the gates should catch.

Both candidates are judged against the champion by the pipeline's gates (its gates
config, the trusted golden set). The report gives, per gate and for the whole set,
the honest pass rate and the corrupted catch rate with Clopper-Pearson intervals,
beside the design's stated rates (``models.gates.design_report``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlcicd_dagster.models import stats
from mlcicd_dagster.models.config import GateConfig
from mlcicd_dagster.platform.lazy import lazy

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlcicd_dagster.models.predictor import Predictor
else:
    np = lazy("numpy")
    pd = lazy("pandas")

DATA_GATES = ("non_inferiority", "slices", "behavioral")
"""Gates whose verdict depends on the data (serving and infra are judged elsewhere)."""

Fit = Callable[["pd.DataFrame", int], "Predictor"]


@dataclass(frozen=True)
class Settings:
    reps: int
    champion_rows: int
    batch_rows: int
    holdout_fraction: float = 0.2
    seed: int = 0
    gates: tuple[str, ...] = DATA_GATES
    jobs: int = 1


@dataclass
class Rate:
    k: int
    n: int

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        return stats.binomial_interval(self.k, self.n, level)

    def text(self) -> str:
        lo, hi = self.interval()
        return f"{self.k}/{self.n} = {self.rate:.3f} [{lo:.3f}, {hi:.3f}]"


@dataclass
class Report:
    settings: Settings
    honest_pass: dict[str, Rate] = field(default_factory=dict)
    bad_caught: dict[str, Rate] = field(default_factory=dict)
    honest_auc_change: list[float] = field(default_factory=list)
    bad_auc_change: list[float] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for name in [*self.settings.gates, "all"]:
            out.append(
                {
                    "gate": name,
                    "honest_pass": self.honest_pass[name],
                    "bad_caught": self.bad_caught[name],
                }
            )
        return out


def _split(frame: pd.DataFrame, fraction: float, rng: np.random.Generator) -> tuple[Any, Any]:
    mask = rng.random(len(frame)) < fraction
    return frame[~mask], frame[mask]


def _replicate(
    i: int,
    pool: pd.DataFrame,
    golden: pd.DataFrame,
    label: str,
    fit: Fit,
    config: GateConfig,
    settings: Settings,
) -> dict[str, Any]:
    from mlcicd_dagster.models.gates import run_all_gates

    rng = np.random.default_rng([settings.seed, i])
    idx = rng.choice(len(pool), settings.champion_rows + settings.batch_rows, replace=False)
    first = pool.iloc[idx[: settings.champion_rows]]
    new = pool.iloc[idx[settings.champion_rows :]]
    tr1, ho1 = _split(first, settings.holdout_fraction, rng)
    tr2, ho2 = _split(new, settings.holdout_fraction, rng)
    bad_tr2, bad_ho2 = tr2.copy(), ho2.copy()
    bad_tr2[label] = 1 - bad_tr2[label]
    bad_ho2[label] = 1 - bad_ho2[label]
    champion = fit(tr1, 1000 + i)
    out: dict[str, Any] = {}
    for kind, train, holdout in (
        ("honest", pd.concat([tr1, tr2]), pd.concat([ho1, ho2])),
        ("bad", pd.concat([tr1, bad_tr2]), pd.concat([ho1, bad_ho2])),
    ):
        cand = fit(train, 2000 + i)
        results = run_all_gates(
            cand, champion, holdout=holdout, golden=golden, config=config, only=settings.gates
        )
        out[kind] = {r.name: bool(r.passed) for r in results}
        y = golden[label].to_numpy()
        out[f"{kind}_auc_change"] = stats.auc(y, cand.predict_proba(golden)) - stats.auc(
            y, champion.predict_proba(golden)
        )
    return out


def _worker(args: tuple[Any, ...]) -> dict[str, Any]:
    from mlcicd_dagster.platform.cpu import openmp_threads

    with openmp_threads(1):
        return _replicate(*args)


def simulate(
    pool: pd.DataFrame,
    golden: pd.DataFrame,
    *,
    label: str,
    fit: Fit,
    config: GateConfig,
    settings: Settings,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Run ``settings.reps`` replicates (in ``settings.jobs`` processes) and tally them."""
    args = [(i, pool, golden, label, fit, config, settings) for i in range(settings.reps)]
    outs: list[dict[str, Any]] = []
    if settings.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(settings.jobs) as workers:
            for out in workers.imap_unordered(_worker, args):
                outs.append(out)
                if progress:
                    progress(len(outs))
    else:
        for a in args:
            outs.append(_worker(a))
            if progress:
                progress(len(outs))
    report = Report(settings)
    for name in [*settings.gates, "all"]:
        if name == "all":
            honest = sum(all(o["honest"].values()) for o in outs)
            caught = sum(not all(o["bad"].values()) for o in outs)
        else:
            honest = sum(o["honest"][name] for o in outs)
            caught = sum(not o["bad"][name] for o in outs)
        report.honest_pass[name] = Rate(honest, len(outs))
        report.bad_caught[name] = Rate(caught, len(outs))
    report.honest_auc_change = [float(o["honest_auc_change"]) for o in outs]
    report.bad_auc_change = [float(o["bad_auc_change"]) for o in outs]
    return report


@dataclass(frozen=True)
class PipelineFit:
    """``fit(train_rows, seed) -> Predictor`` with the pipeline's own trainer (picklable,
    so replicates can run in worker processes)."""

    trainer: str
    params: dict[str, Any]
    features: tuple[str, ...]
    label: str

    def __call__(self, train: pd.DataFrame, seed: int) -> Predictor:
        from mlcicd_dagster.models.trainers import make_trainer

        model = make_trainer(self.trainer, self.params).fit(
            train[list(self.features)], train[self.label].to_numpy(), seed=seed
        )
        return model.predictor


def pipeline_fit(
    trainer: str, params: dict[str, Any], features: Sequence[str], label: str
) -> PipelineFit:
    """A ``fit(train_rows, seed) -> Predictor`` with the pipeline's own trainer."""
    return PipelineFit(trainer, dict(params), tuple(features), label)


def cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
