"""Size the model gates for a new dataset by a power calculation at the data's size.

The non-inferiority gate runs one one-sided test per metric and set (AUC and
log-loss, on the recent holdout and on the golden set) and rejects when any of them
does. An *equally good* candidate is rejected with probability at most the sum of the
tests' false-rejection rates (union bound, ``stats.combined_false_rejection``). So the
margins are chosen to give each of the ``k`` tests a false rejection of
``(1 - target_pass) / k``: the whole gate then passes an equally good model with
probability >= ``target_pass`` (0.95).

What a margin must be depends on how much two honest models' scores differ row by
row: measured here, not assumed. Two *reference retrains* (the pipeline's default
trainer, fitted on two disjoint halves of the rows that are not golden) score the
golden rows; ``stats.per_row_sd`` gives the per-row standard deviation of their paired
AUC and log-loss differences. Two models trained on disjoint data disagree more than a
champion and a candidate that share most of their training rows, so this errs on the
wide side; :data:`SD_SAFETY` widens it further for the estimate's own noise. Then
``stats.margin_for_false_rejection`` gives the smallest margin at each set's size, the
larger of the two sets' margins is used for both, and ``stats.design_non_inferiority``
reports the design's error rates: the false rejection of each test, and the difference
a clearly worse model must have to be caught with probability >= 0.95.

The first model has no champion: its AUC lower bound must clear ``auc_floor``. The
floor is the lower of (a) the value a first model as good as the reference retrains
clears with the same per-test false rejection and (b) half the reference's lift over
chance (:data:`FLOOR_LIFT_SHARE`), and never below chance (0.5).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.init.errors import InitError

TARGET_PASS = 0.95
"""P(an equally good candidate passes every non-inferiority test) at the data's size."""
CATCH_POWER = 0.95
"""The 'still caught' difference is the one rejected with this probability."""
ALPHA = 0.05
"""One-sided level of every bound (P(pass | worse by the margin) <= ALPHA)."""
SD_SAFETY = 1.2
"""The measured per-row SD is widened by this factor (one pair of retrains measures it)."""
MAX_AUC_MARGIN = 0.10
"""A gate that needs a wider AUC margin at this size judges nothing useful: refused."""
HOLDOUT_FRACTION = 0.2
"""The pipeline's holdout share of the landed rows (``PipelineSpec.holdout_fraction``)."""
SETS = ("holdout", "golden")
FLOOR_LIFT_SHARE = 0.5
"""The first model must keep at least this share of the reference retrains' AUC lift over
chance: its first batches may be far smaller than the file (a smaller holdout, a model
trained on fewer rows), and the floor is there to stop a useless model, not a young one."""


_METRIC_WORDS = {
    ("multiclass", "loss"): "log-loss (nats per row)",
    ("multiclass", "error"): "error rate",
    ("regression", "loss"): "squared error (share of the champion's mean)",
    ("regression", "error"): "absolute error (share of the champion's mean)",
}


@dataclass(frozen=True)
class MetricSizing:
    metric: str  # auc | log_loss
    config_key: str  # the gates.yaml key it sets
    sd_per_row: float  # measured, before SD_SAFETY
    margin: float
    designs: tuple[dict[str, Any], ...]  # stats.TestDesign.to_dict() per set
    caught: float
    """A candidate worse by this much is rejected with probability >= CATCH_POWER."""


@dataclass(frozen=True)
class GateSizing:
    task: str
    golden_rows: int
    holdout_rows: int
    reference_train_rows: int
    reference: dict[str, float]  # metric -> value of the reference retrains on golden
    metrics: tuple[MetricSizing, ...]
    false_rejection: float  # union bound over every test
    auc_floor: float | None = None
    floor_false_rejection: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pass_probability(self) -> float:
        return 1.0 - self.false_rejection

    def gate_values(self) -> dict[str, Any]:
        """The gates.yaml keys this sizing sets, with the ``design`` the gates check their
        error rates against when the pipeline loads (the measured, widened per-row SDs,
        the holdout size, and the difference each metric still catches)."""
        out: dict[str, Any] = {m.config_key: m.margin for m in self.metrics}
        out["alpha"] = ALPHA
        out["max_design_false_rejection"] = round(1 - TARGET_PASS, 4)
        if self.auc_floor is not None:
            out["auc_floor"] = self.auc_floor
        out["design"] = {
            "holdout_rows": self.holdout_rows,
            "sd_per_row": {m.metric: _round_up(m.sd_per_row * SD_SAFETY) for m in self.metrics},
            "worse_by": {m.metric: m.caught for m in self.metrics},
        }
        return out

    def lines(self) -> list[str]:
        """What the sizing means, in sentences (for the command's output and gates.yaml)."""
        out = [
            f"sized at the data's size: golden set {self.golden_rows} rows, holdout "
            f"{self.holdout_rows} rows ({HOLDOUT_FRACTION:.0%} of the other rows once landed)",
            f"an equally good model passes non-inferiority with probability >= "
            f"{self.pass_probability:.3f} (target {TARGET_PASS}; union bound over "
            f"{sum(len(m.designs) for m in self.metrics)} one-sided tests at alpha {ALPHA})",
        ]
        for m in self.metrics:
            what = _METRIC_WORDS.get((self.task, m.metric), m.metric)
            out.append(
                f"{what}: margin {m.margin:.4g}; a model worse by >= {m.caught:.4g} is "
                f"rejected with probability >= {CATCH_POWER} (per-row SD of two honest "
                f"retrains' difference {m.sd_per_row:.4g}, widened x{SD_SAFETY})"
            )
        if self.task != "binary":
            out.append(
                "first model: its loss must beat the constant model's (class shares, or the "
                "mean label) with 95% confidence"
            )
        if self.auc_floor is not None:
            out.append(
                f"first model: AUC lower bound >= {self.auc_floor} (reference retrains on "
                f"half the data: AUC {self.reference.get('auc', float('nan')):.3f}; the floor "
                f"keeps at most half its lift over chance, so small first batches pass)"
            )
        out += list(self.notes)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pass_probability"] = self.pass_probability
        return d


def _round_up(value: float, digits: int = 3) -> float:
    scale = 10 ** (digits - 1 - math.floor(math.log10(abs(value)))) if value else 1
    return math.ceil(value * scale) / scale


def _size_metric(
    metric: str, key: str, sd: float, sizes: dict[str, int], per_test: float
) -> tuple[MetricSizing, float]:
    """One metric's margin, sized so that an equal model fails each set's test with
    probability <= ``per_test``; with its design per set and the sum of their rates."""
    from mlcicd_dagster.models import stats

    sd_used = max(sd * SD_SAFETY, 1e-6)
    need = max(
        stats.margin_for_false_rejection(sd_used, n, ALPHA, per_test) for n in sizes.values()
    )
    margin = _round_up(need)
    designs = []
    caught = math.inf
    total = 0.0
    for set_name, n in sizes.items():
        se = sd_used / math.sqrt(n)
        worse = margin + se * (stats.z_quantile(ALPHA) + stats.z_quantile(1 - CATCH_POWER))
        d = stats.design_non_inferiority(
            n=n,
            sd_per_row=sd_used,
            margin=margin,
            alpha=ALPHA,
            worse_by=worse,
            target=per_test,
            name=f"{metric} on {set_name}",
        )
        designs.append({"set": set_name, **d.to_dict()})
        total += d.false_rejection
        caught = min(caught, worse)  # the gate rejects when any set's test does
    return MetricSizing(metric, key, sd, margin, tuple(designs), _round_up(caught)), total


def _halves(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the rows, stratified by label."""
    rng = np.random.default_rng(seed)
    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    for value in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == value))
        a.append(idx[: len(idx) // 2])
        b.append(idx[len(idx) // 2 :])
    return np.sort(np.concatenate(a)), np.sort(np.concatenate(b))


def reference_scores(
    pool: pd.DataFrame,
    golden: pd.DataFrame,
    *,
    features: list[str],
    label: str,
    classes: list[Any],
    task: str = "binary",
    trainer: str = "sklearn",
    trainer_params: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The task's outputs on ``golden`` of two honest retrains (disjoint halves of
    ``pool``): P(``classes[1]``) for binary, class probabilities for multiclass, values
    for regression.

    The pipeline's own trainer for the task, on raw labels (the task encodes them). One
    thread each: OpenMP's spinning threads cost ten times more than they save on a shared
    machine at these sizes (measured: 10 s vs 0.6 s for 2,000 rows on 2 busy cores).
    """
    from mlcicd_dagster.models.tasks import make_task
    from mlcicd_dagster.models.trainers import make_trainer

    t = make_task(task, classes if task != "regression" else None)
    y = t.encode(pool[label])
    first, second = _halves(y, seed) if task != "regression" else _plain_halves(len(y), seed)
    scores = []
    for i, idx in enumerate((first, second)):
        model = make_trainer(trainer, trainer_params or {}, task=t).fit(
            pool.iloc[idx][features].reset_index(drop=True),
            pool[label].iloc[idx].reset_index(drop=True),
            seed=seed + i,
            threads=1,
        )
        scores.append(np.asarray(model.predictor.predict(golden[features]), np.float64))
    return scores[0], scores[1], min(len(first), len(second))


def _plain_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.random.default_rng(seed).permutation(n)
    return np.sort(idx[: n // 2]), np.sort(idx[n // 2 :])


def size_binary(
    y_golden: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    *,
    holdout_rows: int,
    reference_train_rows: int = 0,
) -> GateSizing:
    """Margins and floor for a binary task from two reference retrains' golden scores."""
    from mlcicd_dagster.models import stats

    y = np.asarray(y_golden).astype(np.int64)
    sizes = {"holdout": int(holdout_rows), "golden": len(y)}
    if min(sizes.values()) < 20 or min(int(y.sum()), int(len(y) - y.sum())) < 2:
        raise InitError(
            f"too few rows for the gates: the golden set has {len(y)} rows "
            f"({int(y.sum())} positive) and the holdout would have {holdout_rows}; "
            "each needs >= 20 rows with both classes"
        )
    metrics = (("auc", "auc_margin"), ("log_loss", "logloss_margin"))
    per_test = (1 - TARGET_PASS) / (len(metrics) * len(SETS))
    sized: list[MetricSizing] = []
    total = 0.0
    for metric, key in metrics:
        sd = stats.per_row_sd(metric, y, score_a, score_b)
        one, rate = _size_metric(metric, key, sd, sizes, per_test)
        sized.append(one)
        total += rate
    auc_margin = sized[0].margin
    notes: list[str] = []
    if auc_margin > MAX_AUC_MARGIN:
        sd = sized[0].sd_per_row * SD_SAFETY
        rows = stats.rows_for_false_rejection(sd, MAX_AUC_MARGIN, ALPHA, per_test)
        raise InitError(
            f"too few rows for the gates: at this size an equally good model passes only with "
            f"an AUC margin of {auc_margin:.3f} (> {MAX_AUC_MARGIN}); the golden set and the "
            f"holdout each need >= {rows} rows (the holdout is {HOLDOUT_FRACTION:.0%} of the "
            "landed rows): add rows to the file"
        )
    # first model: its AUC lower bound must clear the floor on both sets
    ref_auc = min(stats.auc(y, score_a), stats.auc(y, score_b))
    se_auc = stats.auc_with_bounds(y, score_a, ALPHA).se * SD_SAFETY
    z = stats.z_quantile(ALPHA) + stats.z_quantile(per_test)
    floor_raw = min(
        ref_auc - se_auc * math.sqrt(len(y) / min(sizes.values())) * z,
        0.5 + FLOOR_LIFT_SHARE * (ref_auc - 0.5),
    )
    floor = max(0.5, math.floor(floor_raw * 100) / 100)
    floor_fr = sum(
        stats.design_false_rejection(se_auc * math.sqrt(len(y) / n), ref_auc - floor, ALPHA)
        for n in sizes.values()
    )
    if floor <= 0.5:
        notes.append(
            "warning: the reference retrains are barely better than chance "
            f"(AUC {ref_auc:.3f}); the first model's floor is chance level"
        )
    ll_a = float(stats.row_log_loss(y, score_a).mean())
    return GateSizing(
        task="binary",
        golden_rows=len(y),
        holdout_rows=int(holdout_rows),
        reference_train_rows=int(reference_train_rows),
        reference={"auc": ref_auc, "log_loss": ll_a},
        metrics=tuple(sized),
        false_rejection=float(stats.combined_false_rejection([total])),
        auc_floor=floor,
        floor_false_rejection=float(floor_fr),
        notes=tuple(notes),
    )


MAX_ERROR_MARGIN = 0.15
"""Multiclass: a gate that must accept 15 more errors per 100 rows judges nothing useful."""
MAX_RELATIVE_MARGIN = 1.0
"""Regression: a gate that must accept twice the champion's squared error: refused."""
TASK_METRICS = {
    # task -> ((metric, gates.yaml key, relative to the champion's mean?), ...)
    "multiclass": (("loss", "loss_margin", False), ("error", "error_margin", False)),
    "regression": (("loss", "relative_margin", True), ("error", "relative_error_margin", True)),
}


def size_task(
    task: str,
    y_golden: np.ndarray,
    out_a: np.ndarray,
    out_b: np.ndarray,
    *,
    classes: list[Any] | None = None,
    holdout_rows: int,
    reference_train_rows: int = 0,
) -> GateSizing:
    """Margins for a multiclass or regression task from two reference retrains' outputs.

    The task gates (``models.task_gates``) judge the paired per-row differences of the
    task's loss and error (multiclass: log-loss and 0/1 error; regression: squared and
    absolute error, with margins as shares of the champion's mean) by a one-sided CLT
    bound on each set. The per-row SD of those differences between two honest retrains is
    measured here (regression: divided by the reference's mean, as the margins are), and
    each margin is the smallest that keeps an equally good model's false rejection of its
    four tests within ``1 - TARGET_PASS`` together (union bound).
    """
    from mlcicd_dagster.models import stats
    from mlcicd_dagster.models.tasks import make_task

    t = make_task(task, classes if task != "regression" else None)
    y = np.asarray(y_golden)
    sizes = {"holdout": int(holdout_rows), "golden": len(y)}
    if min(sizes.values()) < 20:
        raise InitError(
            f"too few rows for the gates: the golden set has {len(y)} rows and the holdout "
            f"would have {holdout_rows}; each needs >= 20 rows"
        )
    metrics = TASK_METRICS[task]
    per_test = (1 - TARGET_PASS) / (len(metrics) * len(SETS))
    sized: list[MetricSizing] = []
    total = 0.0
    reference: dict[str, float] = {}
    for metric, key, relative in metrics:
        row = t.row_loss if metric == "loss" else t.row_error
        la, lb = row(y, out_a), row(y, out_b)
        scale = float(np.mean((la + lb) / 2)) if relative else 1.0
        reference[metric] = float(np.mean(la))
        if relative and scale <= 0:
            raise InitError(f"the reference retrains fit the golden set exactly ({metric} 0)")
        sd = float(np.std(la - lb, ddof=1)) / scale
        one, rate = _size_metric(metric, key, sd, sizes, per_test)
        sized.append(one)
        total += rate
    limit_key, limit = (
        ("error", MAX_ERROR_MARGIN) if task == "multiclass" else ("loss", MAX_RELATIVE_MARGIN)
    )
    judged = next(m for m in sized if m.metric == limit_key)
    if judged.margin > limit:
        rows = stats.rows_for_false_rejection(judged.sd_per_row * SD_SAFETY, limit, ALPHA, per_test)
        what = "error-rate margin" if task == "multiclass" else "relative squared-error margin"
        raise InitError(
            f"too few rows for the gates: at this size an equally good model passes only with "
            f"a {what} of {judged.margin:.3f} (> {limit}); the golden set and the holdout "
            f"each need >= {rows} rows (the holdout is {HOLDOUT_FRACTION:.0%} of the landed "
            "rows): add rows to the file"
        )
    return GateSizing(
        task=task,
        golden_rows=len(y),
        holdout_rows=int(holdout_rows),
        reference_train_rows=int(reference_train_rows),
        reference=reference,
        metrics=tuple(sized),
        false_rejection=float(stats.combined_false_rejection([total])),
    )
