"""Each step of the shipped pipeline carries its Kubernetes compute request (op_tags)."""

from __future__ import annotations

import dataclasses

import dagster as dg


def _tags_of(pipeline, name: str) -> dict:
    (asset,) = [a for a in pipeline.assets if dg.AssetKey(["credit_default", name]) in a.keys]
    return dict(asset.op_tags) if hasattr(asset, "op_tags") else dict(asset.node_def.tags)


def test_torch_model_step_asks_for_gpus_and_the_rest_for_cpu(monkeypatch):
    from dagster_k8s.job import get_user_defined_k8s_config

    from assets.credit_default import SPEC
    from mlcicd_dagster.pipeline import build_pipeline

    monkeypatch.setenv("MLCICD_GPU_COUNT", "2")
    torch_pipeline = build_pipeline(dataclasses.replace(SPEC, trainer="torch"))
    model = get_user_defined_k8s_config(_tags_of(torch_pipeline, "model"))
    limits = model.container_config["resources"]["limits"]
    assert str(limits["nvidia.com/gpu"]) == "2"
    assert model.pod_spec_config["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert model.pod_spec_config["node_selector"]

    for step in ("raw_batch", "validated_batch", "training_set", "monitoring"):
        cfg = get_user_defined_k8s_config(_tags_of(torch_pipeline, step))
        resources = cfg.container_config["resources"]
        assert "nvidia.com/gpu" not in resources.get("limits", {})
        assert resources["requests"]["cpu"] and resources["requests"]["memory"]

    # the shipped (scikit-learn) model trains on CPU
    sklearn_model = get_user_defined_k8s_config(_tags_of(build_pipeline(SPEC), "model"))
    assert "nvidia.com/gpu" not in sklearn_model.container_config["resources"].get("limits", {})
