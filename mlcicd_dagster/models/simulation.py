"""The gates' error rates on real data, by simulation (what the design promises, checked).

Each replicate draws two disjoint batches from a pool of real labelled rows (the
champion's batch and a new one, ``champion_rows`` and ``batch_rows``), splits each
into train and holdout as the pipeline does (``holdout_fraction``), and trains with the
pipeline's own trainer:

* the champion on the first batch's training rows;
* an *honest* candidate on both batches (a routine retrain: the gates should pass it);
* a *corrupted* candidate on both batches with the new batch's labels corrupted
  (training and holdout rows alike, as a poisoned batch lands in the lake): a clearly
  worse model the gates should catch. Binary: labels inverted; multiclass: each label
  replaced by the next class; regression: labels reflected about the batch's mean.

Both candidates are judged against the champion by the pipeline's gates (its gates
config, the trusted golden set; ``models.task_gates`` for multiclass and regression).
The report gives, per gate and for the whole set, the honest pass rate and the
corrupted catch rate with Clopper-Pearson intervals, beside the design's stated rates
(``models.gates.design_report``), and per behavioral test the spread of its paired
statistic between honest retrains (what ``retrain_sd`` in the behavioral spec states).
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
    task: str = "binary"
    classes: tuple[Any, ...] = ()


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
    honest_loss_change: list[float] = field(default_factory=list)
    """Golden-set mean per-row loss, candidate - champion (> 0: worse), honest retrains."""
    bad_loss_change: list[float] = field(default_factory=list)
    behavioral_diffs: dict[str, list[float]] = field(default_factory=dict)
    """Per paired behavioral test: its statistic ``D`` on each honest retrain."""
    behavioral_se: dict[str, list[float]] = field(default_factory=dict)
    behavioral_pass: dict[str, Rate] = field(default_factory=dict)
    """Per behavioral test: honest retrains passing it."""
    row_sd: dict[str, list[float]] = field(default_factory=dict)
    """Per non-inferiority set and metric: the per-row SD of the paired difference on
    each honest retrain (what ``design.sd_per_row`` states)."""

    def retrain_spread(self) -> dict[str, dict[str, float]]:
        """Per paired behavioral test: mean and SD of ``D`` between honest retrains (the
        spec's ``retrain_sd``) and the median row-sampling SE."""
        out = {}
        for name, values in self.behavioral_diffs.items():
            arr = np.asarray(values, np.float64)
            out[name] = {
                "mean": float(arr.mean()),
                "sd": float(arr.std(ddof=1)) if len(arr) > 1 else float("nan"),
                "se": float(np.median(self.behavioral_se[name])),
                "n": float(len(arr)),
            }
        return out

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


def corrupt_labels(labels: pd.Series, task: Any, rng: np.random.Generator) -> np.ndarray:
    """A poisoned batch's labels: binary inverted, multiclass shifted to the next class,
    regression reflected about the batch's mean (``2 mean - y``: the trend reversed)."""
    if task.name == "regression":
        y = labels.to_numpy(np.float64)
        return 2 * np.nanmean(y) - y
    codes = task.encode(labels)
    k = len(task.classes)
    return np.asarray(task.decode((codes + 1) % k), dtype=object).astype(labels.dtype)


def _task(settings: Settings) -> Any:
    from mlcicd_dagster.models.tasks import make_task

    return make_task(settings.task, list(settings.classes) or None)


def _judge(
    cand: Predictor,
    champion: Predictor,
    holdout: pd.DataFrame,
    golden: pd.DataFrame,
    config: GateConfig,
    settings: Settings,
    task: Any,
) -> list[Any]:
    if task.name == "binary":
        from mlcicd_dagster.models.gates import run_all_gates

        return run_all_gates(
            cand, champion, holdout=holdout, golden=golden, config=config, only=settings.gates
        )
    from mlcicd_dagster.models.task_gates import run_task_gates

    return run_task_gates(
        cand, champion, holdout=holdout, golden=golden, config=config, task=task,
        only=settings.gates,
    )  # fmt: skip


def _row_sd(row: dict[str, Any], task: Any) -> float:
    """Per-row SD of a non-inferiority row's paired difference (``se * sqrt(n)``); for a
    regression as a share of the champion's mean, as its margins are."""
    sd = float(row["se"]) * float(np.sqrt(row["n"]))
    if task.name == "regression" and row.get("champion"):
        sd /= float(row["champion"])
    return sd


def _replicate(
    i: int,
    pool: pd.DataFrame,
    golden: pd.DataFrame,
    label: str,
    fit: Fit,
    config: GateConfig,
    settings: Settings,
) -> dict[str, Any]:
    task = _task(settings)
    rng = np.random.default_rng([settings.seed, i])
    idx = rng.choice(len(pool), settings.champion_rows + settings.batch_rows, replace=False)
    first = pool.iloc[idx[: settings.champion_rows]]
    new = pool.iloc[idx[settings.champion_rows :]]
    tr1, ho1 = _split(first, settings.holdout_fraction, rng)
    tr2, ho2 = _split(new, settings.holdout_fraction, rng)
    bad_tr2, bad_ho2 = tr2.copy(), ho2.copy()
    bad_tr2[label] = corrupt_labels(bad_tr2[label], task, rng)
    bad_ho2[label] = corrupt_labels(bad_ho2[label], task, rng)
    champion = fit(tr1, 1000 + i)
    y = task.encode(golden[label])
    champion_loss = float(np.mean(task.row_loss(y, champion.predict(golden))))
    out: dict[str, Any] = {}
    for kind, train, holdout in (
        ("honest", pd.concat([tr1, tr2]), pd.concat([ho1, ho2])),
        ("bad", pd.concat([tr1, bad_tr2]), pd.concat([ho1, bad_ho2])),
    ):
        cand = fit(train, 2000 + i)
        results = _judge(cand, champion, holdout, golden, config, settings, task)
        if any(r.error for r in results):
            errors = "; ".join(r.summary for r in results if r.error)
            raise RuntimeError(f"replicate {i} ({kind}): a gate could not judge: {errors}")
        out[kind] = {r.name: bool(r.passed) for r in results}
        behavioral = [row for r in results if r.name == "behavioral" for row in r.rows]
        out[f"{kind}_tests"] = {str(row["test"]): bool(row["passed"]) for row in behavioral}
        out[f"{kind}_diffs"] = {
            str(row["test"]): (float(row["paired_diff"]), float(row["se"]))
            for row in behavioral
            if row.get("paired_diff") is not None
        }
        out[f"{kind}_row_sd"] = {
            f"{row['set']} {row['metric']}": _row_sd(row, task)
            for r in results
            if r.name == "non_inferiority"
            for row in r.rows
            if row.get("se") is not None and row.get("n")
        }
        loss = float(np.mean(task.row_loss(y, cand.predict(golden))))
        out[f"{kind}_loss_change"] = loss - champion_loss
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
    report.honest_loss_change = [float(o["honest_loss_change"]) for o in outs]
    report.bad_loss_change = [float(o["bad_loss_change"]) for o in outs]
    for o in outs:
        for name, (diff, se) in o["honest_diffs"].items():
            report.behavioral_diffs.setdefault(name, []).append(diff)
            report.behavioral_se.setdefault(name, []).append(se)
        for name, sd in o["honest_row_sd"].items():
            report.row_sd.setdefault(name, []).append(sd)
    tests = sorted({t for o in outs for t in o["honest_tests"]})
    for t in tests:
        report.behavioral_pass[t] = Rate(
            sum(o["honest_tests"].get(t, True) for o in outs), len(outs)
        )
    return report


@dataclass(frozen=True)
class PipelineFit:
    """``fit(train_rows, seed) -> Predictor`` with the pipeline's own trainer (picklable,
    so replicates can run in worker processes)."""

    trainer: str
    params: dict[str, Any]
    features: tuple[str, ...]
    label: str
    task: str = "binary"
    classes: tuple[Any, ...] = ()
    factory: str | None = None
    model_params: dict[str, Any] | None = None

    def __call__(self, train: pd.DataFrame, seed: int) -> Predictor:
        from mlcicd_dagster.models.tasks import make_task
        from mlcicd_dagster.models.trainers import make_trainer

        trainer = make_trainer(
            self.trainer,
            self.params,
            task=make_task(self.task, list(self.classes) or None),
            factory=self.factory,
            model_params=self.model_params,
        )
        model = trainer.fit(train[list(self.features)], train[self.label], seed=seed, threads=1)
        return model.predictor


def pipeline_fit(
    trainer: str,
    params: dict[str, Any],
    features: Sequence[str],
    label: str,
    **task: Any,
) -> PipelineFit:
    """A ``fit(train_rows, seed) -> Predictor`` with the pipeline's own trainer
    (``task``: ``task``, ``classes``, ``factory``, ``model_params`` as in the spec)."""
    return PipelineFit(trainer, dict(params), tuple(features), label, **task)


def spec_fit(spec: Any, **params: Any) -> PipelineFit:
    """The fit of a pipeline spec (``pipeline.spec.PipelineSpec``); ``params`` override
    its trainer's parameters (fast settings)."""
    return PipelineFit(
        spec.trainer,
        {**dict(spec.trainer_params), **params},
        tuple(spec.features),
        spec.label,
        spec.task,
        tuple(spec.classes or ()),
        spec.model_factory,
        dict(spec.model_params) if spec.model_params else None,
    )


def spec_settings(spec: Any, **kw: Any) -> Settings:
    """``Settings`` for a pipeline spec: its task, classes and holdout fraction."""
    return Settings(
        task=spec.task,
        classes=tuple(spec.classes or ()),
        holdout_fraction=spec.holdout_fraction,
        **kw,
    )


def cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
