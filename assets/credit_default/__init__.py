"""credit_default: will a card holder default next month? (Yeh & Lien 2009, UCI 350).

The pipeline is declared in ``defs.yaml`` (an ``mlcicd_dagster.MLPipeline`` instance)
with the files beside it: the Great Expectations suite (expectations.yaml), the model
gates (gates.yaml), the behavioral tests (behavioral.yaml) and the shipped data (data/:
pool of landed-batch rows and the trusted golden set). ``SPEC`` is that declaration,
resolved, for the demo's story and tests.
"""

from __future__ import annotations

from pathlib import Path

from mlcicd_dagster.component import load_spec

HERE = Path(__file__).parent
DATA = HERE / "data"
SPEC = load_spec(HERE)
