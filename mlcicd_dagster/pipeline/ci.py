"""``mlcicd ci``: judge a change to pipeline or model code before it merges.

The pipeline (data gate, training set, model) runs on a sample in a scratch home
with its own MLflow store, so a pull request never writes to production; the
candidate is then judged by every model gate against the champion registered at
``MLFLOW_TRACKING_URI`` (or the embedded store), and a Markdown report is written
for the pull-request comment. Exit 1 when a gate (or the data gate) fails.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from mlcicd_dagster.platform.environ import scoped_environ
from mlcicd_dagster.platform.home import Home

if TYPE_CHECKING:
    from mlcicd_dagster.pipeline.factory import PipelineDefs

CI_BATCH_NAME = "ci-sample.csv"


def run_ci(p: PipelineDefs, *, report_path: Path, sample_rows: int) -> int:
    import pandas as pd

    from mlcicd_dagster.data.lake import Lake
    from mlcicd_dagster.models.ci import judge_candidate
    from mlcicd_dagster.pipeline import records
    from mlcicd_dagster.pipeline.model_gate import _gate_config

    spec = p.spec
    if spec.sample_path is None:
        raise ValueError(f"pipeline {spec.dataset} declares no sample_path for CI runs")
    champion_uri = Home.from_env().tracking_uri  # read before switching to the scratch home
    with (
        tempfile.TemporaryDirectory(prefix="mlcicd-ci-") as scratch,
        scoped_environ({"MLCICD_HOME": scratch}, unset=["MLFLOW_TRACKING_URI"]),
    ):
        home = Home(Path(scratch)).ensure(spec.dataset)
        sample = pd.read_csv(spec.sample_path)
        sample = sample.sample(n=min(sample_rows, len(sample)), random_state=0)
        from mlcicd_dagster.demo.landing import land_frame

        land_frame(home.landing(spec.dataset), CI_BATCH_NAME, sample)
        ok, failure = _run_pipeline(p, home)
        if not ok:
            text = f"# mlcicd ci: FAIL\n\nThe pipeline did not produce a model: {failure}\n"
            _write(report_path, text)
            print(text)
            return 1
        cand = records.read_candidate(home, spec)
        assert cand is not None
        _, holdout, _ = Lake(home.lake(spec.dataset)).read_training_set()
        report = judge_candidate(
            cand["model_uri"],
            tracking_uri=champion_uri,
            model_name=spec.model_name,
            holdout=holdout,
            golden=pd.read_csv(spec.golden_path),
            config=_gate_config(spec.gates_path, spec.behavioral_path, spec.label),
            candidate_tracking_uri=home.tracking_uri,
        )
    text = report.to_markdown()
    _write(report_path, text)
    print(text)
    print(f"\nReport written to {report_path}")
    return 0 if report.passed else 1


def _run_pipeline(p: PipelineDefs, home: Home) -> tuple[bool, str]:
    """raw_batch -> data gate -> validated_batch -> training_set -> model, in the scratch home."""
    from dagster._core.instance.ref import InstanceRef

    from mlcicd_dagster.data.landing import partition_key_for
    from mlcicd_dagster.platform.dagster_home import ensure_dagster_home
    from mlcicd_dagster.platform.deploy_targets import LocalDeployTarget
    from mlcicd_dagster.platform.resources import MlcicdResource

    spec = p.spec
    key = partition_key_for(CI_BATCH_NAME)
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(ensure_dagster_home(home))))
    instance.add_dynamic_partitions(spec.partitions_name, [key])
    selection = [dg.AssetKey(spec.key(n)) for n in ("raw_batch", "validated_batch")]
    selection += [dg.AssetKey(spec.key(n)) for n in ("training_set", "model")]
    data_checks = [c for c in p.asset_checks if _checks_asset(c, spec.key("raw_batch"))]
    resources = {
        "mlcicd": MlcicdResource(home_dir=str(home.root), tracking_uri=home.tracking_uri),
        # the pipeline's deployment ops ask for one; CI stops at the model and deploys nothing
        "deploy_target": LocalDeployTarget(),
    }
    try:
        for part_key, assets in ((key, selection[:2]), (None, selection[2:])):
            result = dg.materialize(
                [*p.assets, *data_checks],
                selection=assets,
                partition_key=part_key,
                instance=instance,
                resources=resources,
                raise_on_error=False,
            )
            if not result.success:
                evaluations = result.get_asset_check_evaluations()
                failed = [e.check_name for e in evaluations if not e.passed]
                return False, f"failed at {', '.join(failed) or 'a step'} (run {result.run_id})"
        return True, ""
    finally:
        instance.dispose()


def _checks_asset(check: dg.AssetChecksDefinition, key: list[str]) -> bool:
    return any(k.asset_key == dg.AssetKey(key) for k in check.check_keys)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
