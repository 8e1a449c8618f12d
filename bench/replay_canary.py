"""Replay a canary between two registered models of a home on labelled rows, many times.

How often would the production analysis roll this candidate back? The bench sections
answer it for simulated populations; this answers it for two real models and real rows
(a demo home's v4 and v6 on the demo's traffic, say). Each row's loss and logged value
come from the production code (``rollout.evidence.request_losses`` on the rows the server
would log; the value the server logs, ``models.tasks.one_score_per_row``); the analysis is
the pipeline's own (``pipeline.deploy_ops.canary_config``: its metrics, its
``rollout.alpha_rollback``/``alpha_promote`` and its steps, with the ``MLCICD_CANARY_*``
overrides). Each simulated canary draws requests from the rows at random, sends each to
the canary with the step's weight, has every label come back at once, and looks every
``--look`` requests: a rollback vote ends it, a promote vote at the last step promotes,
``step_min_samples`` canary requests at a step move it up. Latency and error rate are not
replayed (both models served alike); they keep their share of alpha_rollback.

Run: ``.venv/bin/python -m bench.replay_canary --home H --pipeline credit_default
--stable 4 --canary 6 --rows traffic.csv`` (rows: the features and the label).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def per_row(spec: Any, tracking_uri: str, version: str, rows: pd.DataFrame) -> tuple[Any, Any]:
    """(per-request loss, logged value) of one registered version on ``rows``."""
    from mlcicd_dagster.models.loading import load_predictor
    from mlcicd_dagster.models.tasks import one_score_per_row
    from mlcicd_dagster.rollout.evidence import request_losses

    model = load_predictor(f"models:/{spec.model_name}/{version}", tracking_uri=tracking_uri)
    features = rows[list(spec.features)]
    logged = pd.DataFrame({"label": rows[spec.label].to_numpy()})
    if spec.task == "multiclass":
        probs = np.asarray(model.predict_proba(features), float)
        logged["probabilities"] = list(probs)
        logged["prediction"] = probs.max(axis=1)  # the shift guardrail: its confidence
    else:
        logged["prediction"] = one_score_per_row(model.predict(features))
    _, loss = request_losses(spec.task_type, logged)
    return loss, logged["prediction"].to_numpy(float)


def replay(
    config: Any,
    stable: tuple[np.ndarray, np.ndarray],
    canary: tuple[np.ndarray, np.ndarray],
    *,
    reps: int,
    look: int,
    max_looks: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Outcomes of ``reps`` canaries: rolled back / promoted / undecided, and by whom."""
    from mlcicd_dagster.rollout import analysis as an

    rng = np.random.default_rng(seed)
    steps = np.asarray(config.steps, float)
    metrics = [m for m in config.analysis.metrics if m.role == an.PRIMARY]
    metrics += [m for m in config.analysis.metrics if m.name == "prediction_shift"]
    alpha_rb = config.analysis.alpha_rollback / len(config.analysis.metrics)
    n_rows = len(stable[0])
    # per arm (0 canary, 1 stable) and value (0 loss, 1 logged value): count, sum, sum sq
    n = np.zeros((2, reps))
    s = np.zeros((2, 2, reps))
    q = np.zeros((2, 2, reps))
    step = np.zeros(reps, int)
    at_step = np.zeros(reps)
    outcome = np.zeros(reps, int)
    by: dict[str, int] = {}
    for _ in range(max_looks):
        live = outcome == 0
        if not live.any():
            break
        idx = rng.integers(0, n_rows, (reps, look))
        to_canary = rng.random((reps, look)) < steps[step][:, None]
        for arm, (loss, value) in enumerate((canary, stable)):
            mask = to_canary if arm == 0 else ~to_canary
            for j, col in enumerate((loss, value)):
                x = np.where(mask, col[idx], 0.0)
                s[arm, j] += x.sum(axis=1)
                q[arm, j] += (x * x).sum(axis=1)
            n[arm] += mask.sum(axis=1)
        at_step += to_canary.sum(axis=1)
        mean = s / np.maximum(n, 1)[:, None, :]
        var = np.maximum(q / np.maximum(n, 1)[:, None, :] - mean**2, 0.0)
        var *= (n / np.maximum(n - 1, 1))[:, None, :]
        n_min = n.min(axis=0)
        votes = {}
        for m in metrics:
            j = 0 if m.role == an.PRIMARY else 1
            se2 = var[0, j] / np.maximum(n[0], 1) + var[1, j] / np.maximum(n[1], 1)
            se2 = np.where(n_min >= 2, se2, np.inf)
            votes[m.name] = an.decide_arrays(
                m, mean[0, j] - mean[1, j], se2, n_min,
                alpha_rollback=alpha_rb, alpha_promote=config.analysis.alpha_promote,
            )  # fmt: skip
        rollback = np.zeros(reps, bool)
        for name, v in votes.items():
            new = live & ~rollback & (v == -1)
            by[name] = by.get(name, 0) + int(new.sum())
            rollback |= v == -1
        promote = np.all([votes[m.name] == 1 for m in metrics if m.role == an.PRIMARY], axis=0)
        promote &= ~rollback
        last = step == len(steps) - 1
        outcome[live & rollback] = -1
        outcome[live & ~rollback & promote & last] = 1
        up = live & ~rollback & ~last & (promote | (at_step >= config.step_min_samples))
        step[up] += 1
        at_step[up] = 0
    return {
        "rolled_back": float(np.mean(outcome == -1)),
        "promoted": float(np.mean(outcome == 1)),
        "undecided": float(np.mean(outcome == 0)),
        "rolled_back_by": {k: v / reps for k, v in by.items() if v},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, type=Path, help="an MLCICD_HOME")
    parser.add_argument("--pipeline", required=True, help="a shipped pipeline (assets/NAME)")
    parser.add_argument("--stable", required=True, help="the stable model's version")
    parser.add_argument("--canary", required=True, help="the candidate's version")
    parser.add_argument("--rows", required=True, type=Path, help="labelled rows (csv/parquet)")
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--look", type=int, default=80, help="requests between analyses")
    parser.add_argument("--max-looks", type=int, default=400)
    parser.add_argument(
        "--alpha-rollback", type=float, help="what if: instead of the pipeline's own"
    )
    args = parser.parse_args(argv)

    from mlcicd_dagster.component import load_spec
    from mlcicd_dagster.pipeline.deploy_ops import canary_config

    spec = load_spec(ROOT / "assets" / args.pipeline)
    rows = pd.read_parquet(args.rows) if args.rows.suffix == ".parquet" else pd.read_csv(args.rows)
    uri = f"sqlite:///{(args.home / 'mlflow' / 'mlflow.db').resolve()}"
    stable = per_row(spec, uri, args.stable, rows)
    canary = per_row(spec, uri, args.canary, rows)
    scale = None
    if spec.task == "regression":
        scale = float(np.nanmean(canary[0]))  # stands in for the candidate's holdout MAE
    config = canary_config(spec, scale)
    if args.alpha_rollback is not None:
        from dataclasses import replace

        config = replace(
            config, analysis=replace(config.analysis, alpha_rollback=args.alpha_rollback)
        )
    diff = canary[0] - stable[0]
    print(
        f"{spec.model_name} v{args.canary} vs v{args.stable} on {len(rows)} rows: mean loss "
        f"{np.nanmean(canary[0]):.4f} vs {np.nanmean(stable[0]):.4f}, paired diff "
        f"{np.nanmean(diff):+.4f} (se {np.nanstd(diff) / math.sqrt(len(diff)):.4f}); "
        f"alpha_rollback {config.analysis.alpha_rollback:g}, steps {list(config.steps)}, "
        f"{config.step_min_samples} samples a step"
    )
    result = replay(config, stable, canary, reps=args.reps, look=args.look,
                    max_looks=args.max_looks)  # fmt: skip
    print(
        f"{args.reps} canaries: rolled back {result['rolled_back']:.2%} "
        f"(by {result['rolled_back_by'] or '-'}), promoted {result['promoted']:.2%}, "
        f"undecided {result['undecided']:.2%}"
    )


if __name__ == "__main__":
    main()
