"""``mlcicd ci``: judge a candidate model with every gate and write a PR-ready report.

The candidate usually lives in a scratch home's MLflow store (the CI run trained
it on a sample) while the champion is read from the real store
(``MLFLOW_TRACKING_URI``): hence the two tracking URIs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mlcicd_dagster.models.config import GateConfig
from mlcicd_dagster.models.gates import GateResult, run_all_gates
from mlcicd_dagster.models.predictor import Predictor
from mlcicd_dagster.models.registry import CHAMPION


@dataclass
class CIReport:
    model_name: str
    candidate: str
    champion: str | None
    gates: list[GateResult]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates if g.severity == "ERROR")

    def to_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        icon = "✅" if self.passed else "❌"
        versus = f"champion v{self.champion}" if self.champion else "absolute floors (no champion)"
        lines = [
            f"## {icon} Model gates {verdict}: `{self.model_name}` candidate {self.candidate}",
            "",
            f"Judged against {versus} in {self.seconds:.1f} s.",
            "",
            "| gate | decision | summary |",
            "|---|---|---|",
        ]
        for g in self.gates:
            mark = "✅ PASS" if g.passed else ("⚠️ WARN" if g.severity != "ERROR" else "❌ FAIL")
            lines.append(f"| {g.name} | {mark} | {g.summary.replace('|', '/')} |")
        lines += [*(f"\n> {n}" for n in self.notes), ""]
        for g in self.gates:
            lines += [
                "<details><summary>" + f"{g.name}: {g.decision}" + "</summary>",
                "",
                g.to_markdown(),
                "",
                "</details>",
                "",
            ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "candidate": self.candidate,
            "champion": self.champion,
            "passed": self.passed,
            "seconds": self.seconds,
            "gates": [g.to_dict() for g in self.gates],
        }


def judge_candidate(
    candidate: str | Predictor,
    *,
    tracking_uri: str,
    model_name: str,
    holdout: pd.DataFrame,
    golden: pd.DataFrame,
    config: GateConfig,
    candidate_tracking_uri: str | None = None,
    candidate_uri: str | None = None,
    champion_alias: str = CHAMPION,
) -> CIReport:
    """Judge ``candidate`` (a model URI or a Predictor) against ``model_name@champion``.

    ``tracking_uri``: where the champion is registered. ``candidate_tracking_uri``:
    where the candidate is (default: the same store). ``candidate_uri`` is needed
    for infra validation when ``candidate`` is an in-memory Predictor.
    """
    from mlcicd_dagster.models.loading import load_predictor
    from mlcicd_dagster.models.registry import get_alias

    t0 = time.perf_counter()
    cand_store = candidate_tracking_uri or tracking_uri
    if isinstance(candidate, str):
        candidate_uri = candidate_uri or candidate
        cand_pred = load_predictor(candidate, tracking_uri=cand_store)
    else:
        cand_pred = candidate
    notes = []
    champ_version = get_alias(tracking_uri, model_name, champion_alias)
    champion = None
    champion_uri = None
    if champ_version is not None:
        champion_uri = f"models:/{model_name}/{champ_version}"
        champion = load_predictor(champion_uri, tracking_uri=tracking_uri)
    else:
        notes.append(f"No `{model_name}@{champion_alias}` in {tracking_uri}: absolute floors used.")
    task = getattr(cand_pred, "task", None)
    if task is not None and task.name != "binary":  # the task's own losses (task_gates)
        from mlcicd_dagster.models.task_gates import run_task_gates

        results = run_task_gates(
            cand_pred,
            champion,
            holdout=holdout,
            golden=golden,
            config=config,
            task=task,
            candidate_uri=candidate_uri,
            champion_uri=champion_uri,
            tracking_uri=cand_store,
        )
    else:
        results = run_all_gates(
            cand_pred,
            champion,
            holdout=holdout,
            golden=golden,
            config=config,
            candidate_uri=candidate_uri,
            champion_uri=champion_uri,
            tracking_uri=cand_store,
            champion_tracking_uri=tracking_uri,
        )
    return CIReport(
        model_name=model_name,
        candidate=candidate_uri or f"v{cand_pred.version}",
        champion=champ_version,
        gates=results,
        seconds=time.perf_counter() - t0,
        notes=notes,
    )
