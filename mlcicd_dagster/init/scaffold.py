"""``mlcicd init``: profile a data file and write ``assets/<name>/`` in one atomic step.

What is written (paths relative to ``assets/<name>/``):

* ``defs.yaml``: the ``mlcicd_dagster.MLPipeline`` component instance (task, label,
  id, features as profiled, the default trainer for the task, the files below);
* ``expectations.yaml``: the data suite profiled from the file (``suite_writer``);
* ``gates.yaml``: the model gates sized by a power calculation (``sizing``), with what
  an equally good model's pass probability is and what difference is still caught;
* ``data/golden.csv.gz``: the golden set, split off the file (stratified by class),
  never to be landed; ``data/sample.csv.gz``: the other rows (what ``mlcicd ci`` runs
  the pipeline on, and what to land);
* ``README.md``: the same report the command prints.

Everything is written into a temporary folder beside the target and renamed into
place at the end, so a failure at any point leaves nothing half-written (with
``--force``, the old folder is swapped out only once the new one is complete).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlcicd_dagster.init.errors import InitError
from mlcicd_dagster.init.profile import DataProfile, profile_frame
from mlcicd_dagster.init.sizing import HOLDOUT_FRACTION, GateSizing
from mlcicd_dagster.init.suite_writer import suite_yaml

#: Golden share of the file, and its bounds in rows.
GOLDEN_FRACTION = 0.2
GOLDEN_MIN_ROWS = 50
GOLDEN_MAX_ROWS = 5000
#: Fewest rows a file needs: a golden set, a training set and a holdout worth judging.
MIN_ROWS = 200
#: Fewest rows of each class (classification): some in the golden set, the holdout
#: and each training half.
MIN_CLASS_ROWS = 20
#: The default trainer's settings written into defs.yaml (and used by the sizing's
#: reference retrains, so that the gates are sized for the model that will be trained).
TRAINER = "sklearn"
TRAINER_PARAMS: dict[str, Any] = {"max_iter": 100, "early_stopping": False}
SEED = 0

DEFINITIONS_PY = '''"""The Dagster code location: every pipeline under assets/ (defs.yaml)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MLCICD_HOME", str(Path(__file__).parent / ".mlcicd"))

from mlcicd_dagster.location import load_location  # noqa: E402

location = load_location(Path(__file__).parent / "assets")
defs = location.defs
pipelines = location.pipelines
'''

# Beside a new definitions.py (when the folder has no pyproject.toml): `dg dev`, `dg check
# defs`, `dg list defs` and `dg launch` need a Dagster project's [tool.dg] table.
PYPROJECT_TOML = """# Written by `mlcicd init`: this folder is a Dagster project for `dg`
# (dg dev, dg check defs, dg list defs, dg launch --assets); the code location is
# definitions.py.
[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "assets"
defs_module = "assets"
code_location_target_module = "definitions"
code_location_name = "{name}"
"""


@dataclass
class InitResult:
    name: str
    folder: Path
    profile: DataProfile
    sizing: GateSizing | None
    golden_rows: int
    sample_rows: int
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    wrote_definitions: bool = False
    #: every gate together, by the gates' own design check at load (union bound)
    design_false_rejection: float | None = None

    def report(self) -> list[str]:
        p = self.profile
        task = f"{p.task} (inferred from the label)" if p.task_inferred else p.task
        lines = [
            f"pipeline {self.name}: task {task}, label {p.label!r}"
            + (f", id {p.id_column!r}" if p.id_column else ""),
            f"features: {len(p.numeric_features)} numeric, {len(p.categorical_features)} "
            f"categorical (of {p.rows} profiled rows)",
        ]
        if p.classes:
            counts = dict(zip(p.classes, p.label_profile.category_counts, strict=False))
            lines.append("classes: " + ", ".join(f"{k!r} ({v})" for k, v in counts.items()))
        lines += [f"note: {n}" for n in p.notes]
        lines.append(
            f"golden set: {self.golden_rows} rows (data/golden.csv.gz; never land these); "
            f"other rows: {self.sample_rows} (data/sample.csv.gz)"
        )
        if self.sizing is not None:
            lines += ["gates: " + s for s in self.sizing.lines()]
        if self.design_false_rejection is not None:
            lines.append(
                "gates: every gate together (their own design check when the pipeline loads): "
                f"an equally good model passes with probability >= "
                f"{1 - self.design_false_rejection:.3f}"
            )
        return lines


def _check_name(name: str) -> None:
    if not name or not name.isidentifier() or name.startswith("_"):
        raise InitError(
            f"pipeline name {name!r} must be a Python identifier (letters, digits and _, "
            "not starting with a digit or _): it names the assets, the landing folder and "
            "the registered model"
        )


def read_data(path: Path) -> pd.DataFrame:
    """The file as a frame (CSV, CSV.gz, Parquet), or InitError naming the problem."""
    from mlcicd_dagster.data.readers import BatchReadError, read_batch

    path = Path(path)
    if not path.exists():
        raise InitError(f"data file not found: {path}")
    if not path.is_file():
        raise InitError(f"data file is not a file: {path}")
    try:
        return read_batch(path)
    except BatchReadError as exc:
        raise InitError(f"cannot read {path}: {exc.message} ({exc.reason})") from None


def split_golden(
    df: pd.DataFrame, profile: DataProfile, *, seed: int = SEED
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(golden, rest): a golden share stratified by class (classification), else random."""
    n = len(df)
    size = int(min(GOLDEN_MAX_ROWS, max(GOLDEN_MIN_ROWS, round(GOLDEN_FRACTION * n))))
    rng = np.random.default_rng(seed)
    if profile.task == "regression":
        chosen = rng.permutation(n)[:size]
    else:
        y = df[profile.label].to_numpy()
        parts = []
        for value in pd.unique(y):
            idx = np.flatnonzero(y == value)
            take = max(2, int(round(size * len(idx) / n)))
            parts.append(rng.permutation(idx)[:take])
        chosen = np.concatenate(parts)
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return df[mask].reset_index(drop=True), df[~mask].reset_index(drop=True)


def _check_size(df: pd.DataFrame, profile: DataProfile) -> None:
    if len(df) < MIN_ROWS:
        raise InitError(
            f"too few rows for the gates: {len(df)} rows; init needs >= {MIN_ROWS} (a golden "
            "set, a training set and a holdout, each large enough to judge a model on)"
        )
    if profile.task != "regression":
        lp = profile.label_profile
        small = {c: k for c, k in zip(lp.categories, lp.category_counts, strict=False)}
        rare = {c: k for c, k in small.items() if k < MIN_CLASS_ROWS}
        if rare:
            shown = ", ".join(f"{c!r} ({k} rows)" for c, k in rare.items())
            raise InitError(
                f"too few rows for the gates: class(es) {shown} of label {profile.label!r}; "
                f"each class needs >= {MIN_CLASS_ROWS} rows"
            )


def size_gates(pool: pd.DataFrame, golden: pd.DataFrame, profile: DataProfile) -> GateSizing:
    """The gates' sizing for the task: two reference retrains, then a power calculation."""
    from mlcicd_dagster.init.sizing import reference_scores, size_binary, size_task
    from mlcicd_dagster.models.tasks import make_task

    classes = list(profile.classes)
    try:
        a, b, train_rows = reference_scores(
            pool,
            golden,
            features=list(profile.features),
            label=profile.label,
            classes=classes,
            task=profile.task,
            trainer=TRAINER,
            trainer_params=TRAINER_PARAMS,
            seed=SEED,
        )
    except ValueError as exc:  # the trainer names the column it cannot use
        raise InitError(
            f"the default {TRAINER} trainer cannot learn from this file: {exc}"
        ) from None
    task = make_task(profile.task, classes if profile.task != "regression" else None)
    y = task.encode(golden[profile.label])
    holdout = int(math.floor(HOLDOUT_FRACTION * len(pool)))
    if profile.task == "binary":
        return size_binary(y, a, b, holdout_rows=holdout, reference_train_rows=train_rows)
    return size_task(
        profile.task,
        y,
        a,
        b,
        classes=classes,
        holdout_rows=holdout,
        reference_train_rows=train_rows,
    )


def defs_yaml(name: str, profile: DataProfile, source: str) -> str:
    attributes: dict[str, Any] = {"task": profile.task}
    if profile.task != "regression":
        # in output order; binary: the second is the positive class (P of it is served)
        attributes["classes"] = list(profile.classes)
    attributes["label"] = profile.label
    if profile.id_column is not None:
        attributes["id_column"] = profile.id_column
    attributes["features"] = {
        "numeric": list(profile.numeric_features),
        "categorical": list(profile.categorical_features),
    }
    attributes["training"] = {"trainer": TRAINER, "params": dict(TRAINER_PARAMS)}
    attributes.update(
        {
            "golden": "data/golden.csv.gz",
            "sample": "data/sample.csv.gz",
            "suite": "expectations.yaml",
            "gates": "gates.yaml",
            # every task's canary judges its per-request loss (models.tasks), with these
            # error rates: equal-or-better rolled back, worse by a margin promoted
            "rollout": {
                "strategy": "canary",
                "canary_steps": [0.05, 0.25, 0.5, 1.0],
                "alpha_rollback": 0.05,
                "alpha_promote": 0.05,
            },
            "monitoring": {"window_minutes": 60},
        }
    )
    head = (
        f"# {name}: written by `mlcicd init` from {source} ({profile.rows} rows).\n"
        "# One instance of the mlcicd_dagster.MLPipeline component; paths are relative to\n"
        "# this folder. Review the profiled features, then commit; add `owners:` and a\n"
        "# `behavioral:` test file as you learn what the model must respect.\n"
    )
    body = yaml.safe_dump(
        {"type": "mlcicd_dagster.MLPipeline", "attributes": attributes},
        sort_keys=False,
        default_flow_style=None,
        width=100,
    )
    return head + body


def gates_yaml(profile: DataProfile, sizing: GateSizing) -> str:
    raw: dict[str, Any] = {}
    lines = ["# Model gates, written by `mlcicd init` (the label is the pipeline's: defs.yaml)."]
    raw.update(sizing.gate_values())
    lines.append("# Sized by a power calculation (mlcicd_dagster.init.sizing):")
    lines += [f"#   {s}" for s in sizing.lines()]
    lines += [
        "# Slices (judged per group, Holm-corrected) and a fairness column are yours to add:",
        "#   slices: [{column: <categorical>}, {column: <numeric>, edges: [lo, a, b, hi]}]",
        "# each slice test adds to the chance that an equally good model is rejected.",
    ]
    raw["slices"] = []
    return "\n".join(lines) + "\n" + yaml.safe_dump(raw, sort_keys=False, width=100)


def _readme(name: str, result_lines: list[str], source: str) -> str:
    body = "\n".join(f"- {line}" for line in result_lines)
    return (
        f"# {name}\n\nWritten by `mlcicd init {name} --data {source}`.\n\n{body}\n\n"
        f"Land batches (CSV or Parquet, the same columns) in "
        f"`$MLCICD_HOME/landing/{name}/`; `mlcicd cycle` (or the running sensors) takes "
        "them through the data gate, training, the model gates and the rollout.\n"
    )


def _write_csv_gz(df: pd.DataFrame, path: Path) -> None:
    # mtime=0: the same rows make the same bytes (reviewable, reproducible)
    df.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})


def _write_new(path: Path, text: str) -> bool:
    """Write ``path`` atomically unless it exists (a user's file is never replaced)."""
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _ensure_definitions(root: Path) -> bool:
    wrote = _write_new(root / "definitions.py", DEFINITIONS_PY)
    if wrote:
        name = re.sub(r"[^A-Za-z0-9_]", "_", root.name) or "mlcicd"
        _write_new(root / "pyproject.toml", PYPROJECT_TOML.format(name=name))
    return wrote


def init_pipeline(
    name: str,
    data: Path,
    *,
    label: str,
    task: str | None = None,
    id_column: str | None = None,
    root: Path | None = None,
    force: bool = False,
) -> InitResult:
    """Profile ``data`` and write ``<root>/assets/<name>/``; InitError names any problem."""
    t0 = time.perf_counter()
    _check_name(name)
    root = Path(root or Path.cwd()).resolve()
    assets = root / "assets"
    target = assets / name
    if target.exists() and not force:
        raise InitError(
            f"{target} already exists: choose another name, or pass --force to replace it"
        )
    df = read_data(Path(data))
    profile = profile_frame(df, label=label, id_column=id_column, task=task)
    _check_size(df, profile)
    golden, rest = split_golden(df, profile)
    sizing = size_gates(rest, golden, profile)
    source = Path(data).name
    new_location = not assets.exists()
    assets.mkdir(parents=True, exist_ok=True)
    # Written completely under assets/.init-*/<name>/ (same filesystem), then renamed.
    scratch = Path(tempfile.mkdtemp(prefix=".init-", dir=assets))
    staging = scratch / name
    ok = False
    try:
        (staging / "data").mkdir(parents=True)
        _write_csv_gz(golden, staging / "data" / "golden.csv.gz")
        _write_csv_gz(rest, staging / "data" / "sample.csv.gz")
        (staging / "expectations.yaml").write_text(suite_yaml(profile, name, source=source))
        (staging / "gates.yaml").write_text(gates_yaml(profile, sizing))
        (staging / "defs.yaml").write_text(defs_yaml(name, profile, source))
        result = InitResult(
            name=name,
            folder=target,
            profile=profile,
            sizing=sizing,
            golden_rows=len(golden),
            sample_rows=len(rest),
        )
        result.design_false_rejection = _verify(staging, profile)
        (staging / "README.md").write_text(_readme(name, result.report(), source))
        if target.exists():  # --force: swap the complete new folder in, then drop the old
            os.replace(target, scratch / f"{name}.old")
        os.replace(staging, target)
        ok = True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if new_location and not ok:
            shutil.rmtree(assets, ignore_errors=True)
    if new_location:  # a bare folder becomes a code location: assets/ is its package
        (assets / "__init__.py").write_text('"""One folder per pipeline (defs.yaml)."""\n')
    result.wrote_definitions = _ensure_definitions(root)
    result.files = sorted(str(p.relative_to(root)) for p in target.rglob("*") if p.is_file())
    result.seconds = time.perf_counter() - t0
    return result


def _verify(folder: Path, profile: DataProfile) -> float:
    """Load what was written as the pipeline will: the component (every field checked
    against the golden set), the suite, and the gates with their load-time design check.
    Returns the whole gate set's design false rejection of an equally good model."""
    from mlcicd_dagster.component import load_spec
    from mlcicd_dagster.data.suite import load_suite
    from mlcicd_dagster.models.gates import DesignSizes, design_report
    from mlcicd_dagster.pipeline.model_gate import checked_gate_config, count_rows

    spec = load_spec(folder)
    suite = load_suite(spec.suite_path)
    if suite.label is not None or spec.label != profile.label:
        raise InitError(f"internal: the written label is {spec.label!r}, not {profile.label!r}")
    cfg = checked_gate_config(spec)  # refuses a design that fails equal models too often
    sizes = DesignSizes(cfg.design.holdout_rows, count_rows(spec.golden_path), spec.task)
    report = design_report(cfg, sizes)
    return float(report["false_rejection"])
