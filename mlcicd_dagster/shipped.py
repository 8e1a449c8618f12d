"""The shipped example pipelines as a code location, from the installed package.

``mlcicd demo`` outside a repository, and ``dg dev -m mlcicd_dagster.shipped`` /
``dagster dev -m mlcicd_dagster.shipped`` anywhere, load this: the pipelines under the
repository's ``assets/`` ship inside the wheel as ``mlcicd_dagster.examples``. State goes
to ``MLCICD_HOME`` (default ``.mlcicd/`` in the current directory).
"""

from __future__ import annotations

from mlcicd_dagster.location import load_location

location = load_location("mlcicd_dagster.examples")
defs = location.defs
pipelines = location.pipelines
