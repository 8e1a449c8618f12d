"""credit_default: will a card holder default next month? (Yeh & Lien 2009, UCI 350).

Everything specific to this dataset is declared here and in the files beside it:
the Great Expectations suite (expectations.yaml), the model gates
(gates.yaml), the behavioral tests (behavioral.yaml) and the shipped data
(data/: pool of landed-batch rows and the trusted golden set).
"""

from __future__ import annotations

from pathlib import Path

from mlcicd_dagster.pipeline import PipelineSpec, RolloutSpec, build_pipeline

HERE = Path(__file__).parent
DATA = HERE / "data"

SPEC = PipelineSpec(
    dataset="credit_default",
    model_name="credit_default",
    label="default.payment.next.month",
    id_column="ID",
    numeric_features=(
        "LIMIT_BAL",
        "AGE",
        *(f"BILL_AMT{i}" for i in range(1, 7)),
        *(f"PAY_AMT{i}" for i in range(1, 7)),
    ),
    categorical_features=(
        "SEX",
        "EDUCATION",
        "MARRIAGE",
        "PAY_0",
        *(f"PAY_{i}" for i in range(2, 7)),
    ),
    suite_path=HERE / "expectations.yaml",
    gates_path=HERE / "gates.yaml",
    behavioral_path=HERE / "behavioral.yaml",
    golden_path=DATA / "golden.csv.gz",
    sample_path=DATA / "pool.csv.gz",
    trainer="sklearn",
    # Domain knowledge as a constraint: one more month of payment delay is never good
    # news (the behavioral suite tests exactly this, with zero tolerance).
    # A fixed size (100 trees, no early stopping): each retrain costs the same to serve,
    # so the serving-budget gate (within 1.25x of the champion) judges the model, not how
    # much data early stopping happened to see.
    trainer_params={
        "monotonic_increase": [f"PAY_{i}" for i in (0, 2, 3, 4, 5, 6)],
        "max_iter": 100,
        "early_stopping": False,
    },
    rollout=RolloutSpec(strategy="canary", canary_steps=(0.05, 0.25, 0.5, 1.0)),
)

pipeline = build_pipeline(SPEC)
