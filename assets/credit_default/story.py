"""`mlcicd demo`: the whole CI/CD story of credit_default on the embedded defaults.

Acts, each through the real system (landing zone, sensors via ``mlcicd cycle``,
Dagster runs, MLflow, the model server over HTTP):

1. the first months of data land -> the first champion is trained, gated and rolled out
2. clients call the server (held-back rows) and their labels come back as feedback
3. a defective export lands -> quarantined with a readable reason
4. a new good batch lands -> a new model is trained, gated, canaried and promoted
5. a hand-registered hotfix that skipped the pipeline is canaried -> rolled back
6. traffic drifts (credit limits halved for a new segment) -> monitoring sees it ->
   the retraining policy turns labelled traffic into a batch -> retrained, promoted
7. a batch with inverted labels lands beside two honest ones -> three data gates,
   one training; the model fails the gates on the trusted golden set -> rejected,
   production untouched; data bisect retrains on subsets, names the poisoned batch
   and revokes it; the model trained without it is canaried and promoted
8. a following good batch lands -> trained (still without the revoked batch),
   canaried and promoted: the loop never jams
9. the same loop for the other tasks of the code location: a digits batch (multiclass,
   the pipeline's own torch module) and a diabetes batch (regression) land -> each is
   trained, gated on its task's losses, served, labelled and measured

Running it twice works: the demo home is reset when it was made by a demo.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import DATA, SPEC

DEMO_MARKER = ".mlcicd-demo"
SEED = 7


@dataclass
class Act:
    title: str
    outcome: str
    seconds: float


@dataclass
class Story:
    acts: list[Act] = field(default_factory=list)

    def record(self, title: str, outcome: str, started: float) -> None:
        act = Act(title, outcome, time.perf_counter() - started)
        self.acts.append(act)
        print(f"  -> {outcome}  [{act.seconds:.0f}s]\n", flush=True)


def slices() -> dict[str, pd.DataFrame]:
    """Disjoint row sets of the shipped pool, fixed by a seed."""
    pool = pd.read_csv(DATA / "pool.csv.gz")
    pool = pool.sample(frac=1.0, random_state=SEED).reset_index(drop=True)
    sizes = {
        "batch_1": 5000,
        "traffic": 3000,
        "defective": 500,
        "batch_2": 3000,
        "drift_traffic": 1500,
        "poisoned": 3000,
        "honest_north": 700,
        "honest_south": 700,
        "following": 600,
    }
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = pool.iloc[start : start + n].reset_index(drop=True)
        start += n
    return out


def defective(df: pd.DataFrame) -> pd.DataFrame:
    """A broken export: impossible ages, a label outside {0,1}, negative payments."""
    bad = df.copy()
    rng = np.random.default_rng(SEED)
    rows = rng.choice(len(bad), size=max(3, len(bad) // 30), replace=False)
    bad.loc[rows[: len(rows) // 3], "AGE"] = 500
    bad.loc[rows[len(rows) // 3 : 2 * len(rows) // 3], SPEC.label] = 2
    bad.loc[rows[2 * len(rows) // 3 :], "PAY_AMT1"] = -1200.0
    return bad


def drifted(df: pd.DataFrame) -> pd.DataFrame:
    """A new customer segment: young clients with credit limits cut by half."""
    out = df.copy()
    out["LIMIT_BAL"] = (out["LIMIT_BAL"] / 2).round(-3).clip(lower=10000)
    out["AGE"] = out["AGE"].clip(upper=35)
    return out


def poisoned(df: pd.DataFrame) -> pd.DataFrame:
    """Labels inverted by a broken join upstream: valid-looking data, wrong answers."""
    out = df.copy()
    out[SPEC.label] = 1 - out[SPEC.label]
    return out


def reset_home(home_root: Path) -> None:
    marker = home_root / DEMO_MARKER
    if home_root.exists() and any(home_root.iterdir()) and not marker.exists():
        raise SystemExit(
            f"{home_root} holds state that a demo did not make; run the demo with "
            "MLCICD_HOME pointing elsewhere (or delete that folder to reset)."
        )
    if home_root.exists():
        shutil.rmtree(home_root)
    home_root.mkdir(parents=True)
    marker.write_text("made by `mlcicd demo`; the next demo resets this folder\n")


def run_demo(module: Any) -> int:
    from mlcicd_dagster.demo.story_runner import StoryRunner

    runner = StoryRunner(module, reset=reset_home)
    parts = slices()
    story = Story()
    label = SPEC.label
    with runner:
        t = time.perf_counter()
        runner.say("1. The first months of data land; the first model becomes champion")
        runner.land("2005-04_statements.csv", parts["batch_1"])
        runner.cycle()
        story.record("first batch -> first champion", runner.serving_line(), t)

        t = time.perf_counter()
        runner.say("2. Clients call the server; their labels come back as feedback")
        runner.start_traffic(parts["traffic"], label)
        runner.wait_for_feedback(min_labels=600)
        story.record("traffic + feedback", runner.traffic_line(), t)

        t = time.perf_counter()
        runner.say("3. A defective export lands")
        runner.land("2005-06 statements (export v2).csv", defective(parts["defective"]))
        runner.cycle()
        story.record("defective batch", runner.quarantine_line(), t)

        t = time.perf_counter()
        runner.say("4. A new good batch lands: retrain, gates, canary, promotion")
        runner.land("2005-07_statements.parquet", parts["batch_2"])
        runner.cycle()
        story.record("good batch -> canary", runner.rollout_line(), t)

        t = time.perf_counter()
        runner.say("5. A hotfix registered by hand (no pipeline, no gates) is canaried")
        version = runner.register_hotfix(parts["batch_1"], label)
        runner.deploy(version)
        story.record("bad canary", runner.rollout_line(), t)

        t = time.perf_counter()
        runner.say("6. Traffic drifts: credit limits halved for a new segment")
        runner.replace_traffic(drifted(parts["drift_traffic"]), label)
        runner.monitor_until_retrain(max_windows=4)
        story.record("drift -> retrain", runner.retrain_line(), t)

        t = time.perf_counter()
        runner.say("7. A batch with inverted labels lands, with two honest ones")
        runner.land("2005-08_statements.csv", poisoned(parts["poisoned"]))
        runner.land("2005-08_branch-north.csv", parts["honest_north"])
        runner.land("2005-08_branch-south.csv", parts["honest_south"])
        runner.cycle()
        story.record("poisoned labels -> bisect", runner.bisect_line(), t)

        t = time.perf_counter()
        runner.say("8. A following good batch lands")
        runner.land("2005-09_statements.csv", parts["following"])
        runner.cycle()
        story.record("following good batch", runner.rollout_line(), t)

        t = time.perf_counter()
        runner.say("9. The same loop for other tasks: multiclass (torch) and regression")
        from mlcicd_dagster.demo.task_story import other_tasks

        story.record("other tasks", other_tasks(module, runner, skip=SPEC.dataset), t)

        runner.summary(story)
    return 0
