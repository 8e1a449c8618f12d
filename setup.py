"""Packaging beyond pyproject.toml: the shipped pipelines travel inside the wheel.

``assets/<name>/`` (each pipeline's defs.yaml, suite, gates and data) is installed as
the package ``mlcicd_dagster.examples``, so ``mlcicd demo`` and the shipped code location
(``mlcicd_dagster.shipped``) work from an installed wheel, with no repository around.
"""

from setuptools import find_packages, setup

EXAMPLES = "mlcicd_dagster.examples"

setup(
    packages=[
        *find_packages(include=["mlcicd_dagster", "mlcicd_dagster.*"]),
        EXAMPLES,
        *(f"{EXAMPLES}.{p}" for p in find_packages("assets")),
    ],
    package_dir={EXAMPLES: "assets"},
    package_data={
        "mlcicd_dagster": ["**/*.yaml", "**/*.yml", "**/*.json"],
        EXAMPLES: [
            "**/*.yaml",
            "**/*.yml",
            "**/*.json",
            "**/*.csv",
            "**/*.csv.gz",
            "**/*.parquet",
            "**/*.md",
            "**/*.npz",
        ],
    },
)
