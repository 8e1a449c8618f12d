"""Gate sizing: the power calculation, and the real gate holding to it by simulation.

Honest retrains (the default trainer on fresh draws of the same source) are judged by
the production non-inferiority gate with the sized config: they must pass at the
planned rate; a clearly worse model must be caught. Fast settings here (a few
repetitions); ``bench/bench_init.py`` runs the full simulation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from init_synth import draw

from mlcicd_dagster.init.errors import InitError
from mlcicd_dagster.init.profile import profile_frame
from mlcicd_dagster.init.scaffold import TRAINER_PARAMS, gates_yaml, size_gates, split_golden
from mlcicd_dagster.init.sizing import ALPHA, TARGET_PASS, size_binary
from mlcicd_dagster.models import stats
from mlcicd_dagster.models.config import GateConfig
from mlcicd_dagster.models.gates import GateInputs, gate_non_inferiority
from mlcicd_dagster.models.trainers import make_trainer

FEATURES = ["age", "income", "balance", "claims", "products", "tenure", "score"]


@pytest.fixture(scope="module")
def sized():
    df = draw(3000, seed=0, strings=False, missing=False)
    profile = profile_frame(df, label="churned", id_column="customer_id")
    golden, rest = split_golden(df, profile)
    sizing = size_gates(rest, golden, profile)
    assert sizing is not None
    import yaml

    cfg = GateConfig.from_dict({**yaml.safe_load(gates_yaml(profile, sizing)), "label": "churned"})
    return golden, rest, sizing, cfg


def test_design_meets_the_target(sized):
    _, rest, sizing, cfg = sized
    assert sizing.pass_probability >= TARGET_PASS
    assert sizing.holdout_rows == int(0.2 * len(rest))
    by_key = {m.config_key: m for m in sizing.metrics}
    assert cfg.auc_margin == by_key["auc_margin"].margin
    assert cfg.logloss_margin == by_key["logloss_margin"].margin
    # every test's designed false rejection, from the gates' own design function
    rates = [d["false_rejection"] for m in sizing.metrics for d in m.designs]
    assert len(rates) == 4 and sum(rates) <= 1 - TARGET_PASS + 1e-9
    for m in sizing.metrics:
        for d in m.designs:
            # the stated 'still caught' difference is rejected with probability >= 0.95
            se = d["sd_per_row"] / math.sqrt(d["n"])
            assert stats.design_power(se, m.margin, ALPHA, d["worse_by"]) >= 0.95 - 1e-9
            assert m.caught <= d["worse_by"] * 1.001 or m.caught >= m.margin
    assert 0.5 <= cfg.auc_floor < sizing.reference["auc"]
    text = "\n".join(sizing.lines())
    assert "passes non-inferiority with probability >=" in text and "rejected with" in text


def _fit(frame, seed, features=FEATURES):
    model = make_trainer("sklearn", TRAINER_PARAMS).fit(
        frame[features], frame["churned"].to_numpy(), seed=seed, threads=1
    )
    return model.predictor


def test_honest_retrains_pass_and_worse_models_are_caught(sized):
    """The production gate with the sized config, on fresh draws of the same source."""
    golden, rest, sizing, cfg = sized
    n_train = len(rest) - sizing.holdout_rows
    passed, caught = 0, 0
    reps = 6
    for r in range(reps):
        champ = _fit(draw(n_train, seed=100 + r, strings=False, missing=False), seed=r)
        cand = _fit(draw(n_train, seed=200 + r, strings=False, missing=False), seed=r + 50)
        holdout = draw(sizing.holdout_rows, seed=300 + r, strings=False, missing=False)
        honest = gate_non_inferiority(
            GateInputs(cand, champ, holdout=holdout, golden=golden, config=cfg)
        )
        passed += honest.passed
        worse = _fit(
            draw(n_train, seed=400 + r, strings=False, missing=False), seed=r, features=["tenure"]
        )
        bad = gate_non_inferiority(
            GateInputs(worse, champ, holdout=holdout, golden=golden, config=cfg)
        )
        caught += not bad.passed
        assert "warning" not in honest.summary or "equally good" not in honest.summary
    assert passed >= reps - 1, f"honest retrains passed {passed}/{reps}"
    assert caught == reps


def test_too_few_rows_is_refused():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 30)
    with pytest.raises(InitError, match="too few rows for the gates"):
        size_binary(y, rng.random(30), rng.random(30), holdout_rows=10)
    # a noisy label at a small size: the margin it would need is refused with the rows needed
    y = rng.integers(0, 2, 60)
    with pytest.raises(InitError, match=r"too few rows for the gates.*add rows"):
        size_binary(y, rng.random(60), rng.random(60), holdout_rows=60)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_task_sizing_meets_the_target_and_says_what_it_catches(task):
    """Margins for the task gates from two honest models' outputs: every test's designed
    false rejection adds up to <= 1 - TARGET_PASS, the stated difference is caught with
    probability >= 0.95, and too few rows for a useful margin is refused with the rows
    needed."""
    from mlcicd_dagster.init.sizing import size_task

    rng = np.random.default_rng(7)

    def outputs(n):
        if task == "multiclass":
            y = rng.integers(0, 3, n)
            logits = np.eye(3)[y] * 2.0
            a = np.exp(logits + rng.normal(0, 0.8, (n, 3)))
            b = np.exp(logits + rng.normal(0, 0.8, (n, 3)))
            return y, a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True), [0, 1, 2]
        y = rng.normal(10, 3, n)
        return y, y + rng.normal(0, 1, n), y + rng.normal(0, 1, n), None

    y, a, b, classes = outputs(2000)
    sizing = size_task(task, y, a, b, classes=classes, holdout_rows=1500)
    assert sizing.pass_probability >= TARGET_PASS
    rates = [d["false_rejection"] for m in sizing.metrics for d in m.designs]
    assert len(rates) == 4 and sum(rates) <= 1 - TARGET_PASS + 1e-9
    for m in sizing.metrics:
        for d in m.designs:
            se = d["sd_per_row"] / math.sqrt(d["n"])
            assert stats.design_power(se, m.margin, ALPHA, d["worse_by"]) >= 0.95 - 1e-9
    values = sizing.gate_values()
    keys = {"multiclass": {"loss_margin", "error_margin"},
            "regression": {"relative_margin", "relative_error_margin"}}[task]  # fmt: skip
    assert keys <= set(values) and set(values["design"]["sd_per_row"]) == {"loss", "error"}
    assert "rejected with probability >= 0.95" in "\n".join(sizing.lines())
    y, a, b, classes = outputs(25)
    if task == "regression":  # models that disagree wildly at a tiny size
        b = y + rng.normal(0, 8, len(y))
    else:
        b = np.roll(b, 1, axis=0)
    with pytest.raises(InitError, match="too few rows for the gates"):
        size_task(task, y, a, b, classes=classes, holdout_rows=25)
