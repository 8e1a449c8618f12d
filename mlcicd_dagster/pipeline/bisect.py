"""Data bisect in the pipeline: after a rejection, find the batch to blame and act on it.

The bisect sensor asks for one ``<pipeline>_data_bisect`` run per rejected
candidate (run key: the candidate's version and training data) when

* the candidate failed ``non_inferiority`` and a champion serves,
* the champion was trained by the pipeline (its batches are recorded), and
* batches landed since the champion (the candidate's batches minus its).

The run first re-judges the registered candidate against the champion on the
trusted golden set only: if the golden set does not reproduce the failure, the
data is not blamed. Otherwise ``models.bisect`` retrains on subsets of the new
batches (in memory, nothing registered) and judges each model the same way. The
result (trials, evidence, culprits) goes to the run's metadata, to
``lake/<ds>/model/bisect-<version>.json`` and to an alert. By the pipeline's
``data_bisect`` policy (``revoke`` by default; ``report``; ``off``) each culprit is
revoked, so the training sensor trains the next model without it.

Crash-safe: the run writes nothing until its verdict, then revokes (idempotent:
a batch already revoked is left as it is) and writes the record. A run killed
midway leaves the lake as it was; its run key is redone like any orphaned run.
"""

import time
from logging import Logger
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlcicd_dagster.pipeline import records
from mlcicd_dagster.pipeline.presigned import presigned
from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.platform.resources import MlcicdResource

if TYPE_CHECKING:
    from mlcicd_dagster.models.bisect import BisectResult, TrialOutcome
    from mlcicd_dagster.pipeline.factory import PipelineDefs
    from mlcicd_dagster.pipeline.spec import PipelineSpec

POLICIES = ("revoke", "report", "off")
RUN_KEY_TAG = "dagster/run_key"


def bisect_path(home: Home, spec: "PipelineSpec", version: str):
    return records.model_dir(home, spec) / f"bisect-{version}.json"


def _policy(spec: "PipelineSpec") -> str:
    policy = getattr(spec, "data_bisect", "revoke")
    if policy not in POLICIES:
        raise ValueError(f"data_bisect must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy


def bisect_request(home: Home, spec: "PipelineSpec") -> tuple[dict[str, Any] | None, str]:
    """``(plan, why)``: what to bisect, or None and why there is nothing to."""
    from mlcicd_dagster.rollout.state import read_state

    if _policy(spec) == "off":
        return None, "data bisect is off for this pipeline"
    cand = records.read_candidate(home, spec)
    if not cand:
        return None, "no candidate yet"
    version = str(cand.get("version"))
    ni = records.read_gates(home, spec, version).get("non_inferiority")
    if not ni or ni.get("passed", True):
        return None, f"the last candidate v{version} was not rejected by non_inferiority"
    state = read_state(home.deployment_state(spec.model_name), spec.model_name)
    if state.stable is None:
        return None, "no champion to compare with"
    champion = str(state.stable.version)
    if champion == version:
        return None, "the candidate is the champion"
    champ_data = records.read_version_data(home, spec, champion)
    if not champ_data or champ_data.get("batches") is None:
        return None, f"the champion v{champion} was not trained by the pipeline: no batches"
    champ_batches = list(champ_data["batches"])
    cand_batches = list(cand.get("batches") or [])
    new = [b for b in cand_batches if b not in champ_batches]
    if not new:
        return None, f"no batch landed since the champion v{champion}: not a data problem"
    base = [b for b in cand_batches if b in champ_batches]
    plan = {
        "candidate": version,
        "champion": champion,
        "candidate_uri": cand["model_uri"],
        "base": base,
        "new": new,
        "content_key": str(cand.get("content_key") or ""),
    }
    return plan, ""


def bisect_tick(
    p: "PipelineDefs", home: Home, context: dg.SensorEvaluationContext
) -> dg.SensorResult | dg.SkipReason:
    plan, why = bisect_request(home, p.spec)
    if plan is None:
        return dg.SkipReason(why)
    run_key = f"bisect-v{plan['candidate']}-{plan['content_key'][:12]}"
    if context.instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1):
        return dg.SkipReason(f"v{plan['candidate']} was already bisected")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run_key,
                job_name=p.job_name("data_bisect"),
                tags={
                    "mlcicd/trigger": "rejected_candidate",
                    "mlcicd/candidate": plan["candidate"],
                    "mlcicd/champion": plan["champion"],
                    "mlcicd/new_batches": ", ".join(plan["new"])[:255],
                },
            )
        ]
    )


# -- the trials: real retrains, judged on the golden set -------------------------------


class GoldenJudge:
    """Judges a model as the non-inferiority gate does, on the golden set only."""

    def __init__(self, spec: "PipelineSpec", champion: Any) -> None:
        import pandas as pd

        from mlcicd_dagster.pipeline.model_gate import _gate_config

        self.spec = spec
        self.champion = champion
        self.golden = pd.read_csv(spec.golden_path)
        self.config = _gate_config(spec.gates_path, None, spec.label)

    def __call__(self, predictor: Any) -> "TrialOutcome":
        from mlcicd_dagster.models.bisect import TrialOutcome
        from mlcicd_dagster.models.gates import run_all_gates

        (gate,) = run_all_gates(
            predictor,
            self.champion,
            holdout=self.golden,
            golden=self.golden,
            config=self.config,
            only=["non_inferiority"],
        )
        rows = [r for r in gate.rows if r.get("set") == "golden"]
        evidence = {
            f"golden_{str(r.get('metric', 'value')).replace('-', '_').replace(' ', '_')}_{k}": (
                _num(r.get(k))
            )
            for r in rows
            for k in ("candidate", "champion", "upper_bound")
        }
        passed = all(bool(r.get("passed")) for r in rows) if rows else gate.passed
        return TrialOutcome(passed=passed, evidence=evidence)


def _num(v: Any) -> Any:
    return round(float(v), 5) if isinstance(v, int | float) else v


def make_trial(spec: "PipelineSpec", home: Home, base: list[str], judge: GoldenJudge, log: Logger):
    """``trial(subset)``: train on the training rows of ``base + subset``; judge on golden."""
    from mlcicd_dagster.data.lake import Lake
    from mlcicd_dagster.pipeline.model_gate import holdout_mask

    lake = Lake(home.lake(spec.dataset))

    def trial(subset: list[str]) -> "TrialOutcome":
        rows = lake.read_validated(base + subset)
        train = rows[~holdout_mask(rows, spec)].reset_index(drop=True)
        started = time.perf_counter()
        trained = spec.make_trainer().fit(train[spec.features], train[spec.label], seed=0)
        outcome = judge(trained.predictor)
        verdict = "passes" if outcome.passed else "FAILS"
        log.info(
            f"trial: base + [{', '.join(subset) or 'nothing new'}] ({len(train)} rows, "
            f"{time.perf_counter() - started:.1f}s): {verdict} on the golden set"
        )
        return outcome

    return trial


def run_bisect(spec: "PipelineSpec", mlcicd: MlcicdResource, log: Logger) -> dict[str, Any]:
    """Body of the bisect op: judge, bisect, record, and act by the policy."""
    from mlcicd_dagster.models.bisect import BisectResult, bisect_batches
    from mlcicd_dagster.models.loading import load_predictor
    from mlcicd_dagster.platform.alerts import send_alert
    from mlcicd_dagster.platform.atomic import atomic_write_json

    home = mlcicd.home
    plan, why = bisect_request(home, spec)
    if plan is None:
        log.info(f"nothing to bisect: {why}")
        return {"verdict": "skipped", "explanation": why, "culprits": [], "retrains": 0}
    uri = mlcicd.setup_mlflow()
    champion = load_predictor(f"models:/{spec.model_name}/{plan['champion']}", tracking_uri=uri)
    judge = GoldenJudge(spec, champion)
    full = judge(load_predictor(plan["candidate_uri"], tracking_uri=uri))
    if full.passed:
        result = BisectResult(
            new_batches=plan["new"],
            culprits=[],
            verdict="not_reproduced",
            explanation=f"v{plan['candidate']} is non-inferior to the champion on the golden set "
            "(it failed on the holdout): the trusted rows do not blame the new data",
        )
    else:
        result = bisect_batches(plan["new"], make_trial(spec, home, plan["base"], judge, log))
    record = {
        **plan,
        **result.to_dict(),
        "candidate_on_golden": full.evidence,
        "policy": _policy(spec),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    revoked = []
    if result.verdict == "found" and _policy(spec) == "revoke":
        revoked = _revoke(spec, home, plan, result)
    record["revoked"] = revoked
    atomic_write_json(bisect_path(home, spec, plan["candidate"]), record)
    send_alert(
        home,
        "data_bisect",
        f"{spec.dataset}: v{plan['candidate']} rejected; data bisect: "
        + (
            f"culprit {', '.join(result.culprits)} "
            + ("revoked" if revoked else "(not revoked: policy 'report')")
            if result.verdict == "found"
            else result.verdict
        ),
        {
            "explanation": result.explanation,
            "retrains": result.retrains,
            "new_batches": plan["new"],
        },
    )
    log.info(f"data bisect of v{plan['candidate']}: {result.verdict}: {result.explanation}")
    return record


def _revoke(
    spec: "PipelineSpec", home: Home, plan: dict[str, Any], result: "BisectResult"
) -> list[str]:
    from mlcicd_dagster.data.lake import RevocationError
    from mlcicd_dagster.pipeline.revocation import revoke

    done = []
    failing = next((t for t in reversed(result.trials) if not t.passed), None)
    passing = next((t for t in reversed(result.trials) if t.passed), None)
    for culprit in result.culprits:
        evidence = {
            "candidate": plan["candidate"],
            "champion": plan["champion"],
            "retrains": result.retrains,
            "with": failing.evidence if failing else "the rejected candidate",
            "without": passing.evidence if passing else "the champion's own data",
        }
        try:
            revoke(
                spec,
                home,
                culprit,
                reason=f"data bisect of rejected v{plan['candidate']}: {result.explanation}",
                by="data bisect",
                evidence=evidence,
            )
        except RevocationError as exc:
            if "already revoked" not in str(exc):
                raise
        done.append(culprit)
    return done


def build_bisect_job(p: "PipelineDefs") -> dg.JobDefinition:
    spec = p.spec

    @dg.op(
        name=f"{spec.dataset}__data_bisect",
        tags=spec.op_tags("model"),  # it trains: the model step's compute profile
        description="Retrain on subsets of the batches landed since the champion to find "
        "the one(s) that made the candidate fail on the golden set; revoke by policy.",
    )
    @presigned
    def data_bisect(context: dg.OpExecutionContext, mlcicd: MlcicdResource) -> dg.Output[None]:
        record = run_bisect(spec, mlcicd, context.log)
        return dg.Output(None, metadata=_metadata(record))

    @dg.job(
        name=p.job_name("data_bisect"),
        description="After a rejection: which new batch is to blame (retrains on subsets).",
    )
    @presigned
    def bisect_job() -> None:
        data_bisect()

    return bisect_job


def _metadata(record: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "verdict": record.get("verdict", ""),
        "explanation": record.get("explanation", ""),
        "culprits": dg.MetadataValue.json(record.get("culprits") or []),
        "revoked": dg.MetadataValue.json(record.get("revoked") or []),
        "retrains": int(record.get("retrains") or 0),
    }
    trials = record.get("trials") or []
    if trials:
        lines = ["| trained on (besides the champion's batches) | golden set | seconds |"]
        lines.append("|---|---|---|")
        for t in trials:
            verdict = "pass" if t["passed"] else "**FAIL**"
            lines.append(f"| {', '.join(t['included']) or '-'} | {verdict} | {t['seconds']} |")
        meta["trials"] = dg.MetadataValue.md("\n".join(lines))
    if record.get("candidate_on_golden"):
        meta["candidate_on_golden"] = dg.MetadataValue.json(record["candidate_on_golden"])
    return meta
