"""Register a model by hand, outside the pipeline (what the demo's careless operator does).

Used to show that the canary protects production even from a version that never
went through the model gates: it is trained on shuffled labels, registered with
a tag saying so, and can then be rolled out with the deploy job.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.home import Home

UNVETTED_TAG = "mlcicd.unvetted"


def register_unvetted_model(spec: PipelineSpec, home: Home, rows: Any, label: str) -> str:
    from mlcicd_dagster.models.loading import log_and_register

    rng = np.random.default_rng(0)
    y = rng.permutation(rows[label].to_numpy())
    X = rows[list(spec.features)]
    trained = spec.make_trainer().fit(X, y)
    reg = log_and_register(
        trained.model,
        model_name=spec.model_name,
        X_example=X.head(8),
        tracking_uri=home.tracking_uri,
        feature_names=list(spec.features),
        task=trained.task,
        string_features=trained.string_features,
        allow_missing=trained.allow_missing,
        trusted_types=spec.trusted_types,
        experiment_name=f"{spec.model_name}-hotfixes",
        run_tags={UNVETTED_TAG: "true"},
        version_tags={UNVETTED_TAG: "true", "gates.decision": "NOT RUN"},
    )
    return reg.version
