"""``mlcicd_dagster.MLPipeline``: one ML pipeline as a Dagster component, declared in YAML.

``assets/<name>/defs.yaml``::

    type: mlcicd_dagster.MLPipeline
    attributes:
      task: binary                     # binary | multiclass | regression
      label: default.payment.next.month
      id_column: ID
      features: {numeric: [LIMIT_BAL, AGE], categorical: [SEX]}
      golden: data/golden.csv.gz       # paths are relative to this folder
      suite: expectations.yaml
      gates: gates.yaml

Loading validates every field and names the one at fault (an unknown task, a label
that is not a column of the golden set, a model factory that does not import). The
model's fields are the pipeline's one typed config: :meth:`MLPipeline.to_spec` resolves
them (absolute paths, defaults) into the :class:`PipelineSpec` every library step takes.
Nothing heavy is imported here: the code location imports this in every step process.
"""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from mlcicd_dagster.errors import ConfigError
from mlcicd_dagster.pipeline.spec import PipelineSpec, RolloutSpec, class_keys, label_key
from mlcicd_dagster.platform import yamlio

TYPE_NAME = "mlcicd_dagster.MLPipeline"
# Values are taken as written: no Jinja templating of each string (that alone would cost
# the code location ~0.3 s of load in every step process). The nested sections (features,
# training, rollout, monitoring) are plain pydantic models taken whole: Dagster derives no
# resolvable model for each (~1 ms apiece in every process). Defaults are values, not
# factories (pydantic copies a mutable default for each instance): a factory such as
# `list` has pydantic read its signature through inspect's tokenizer (~2 ms).
_LITERAL = dg.Resolver.passthrough()
Task = Literal["binary", "multiclass", "regression"]


class Features(dg.Model):
    """The model's input columns. Categorical values may be strings."""

    numeric: list[str] = Field(default=[], description="numeric feature columns")
    categorical: list[str] = Field(
        default=[], description="categorical feature columns (ints or strings)"
    )


class Training(dg.Model):
    """Which model is trained, and on what: the task's built-in default or your own factory."""

    trainer: Literal["sklearn", "torch"] = Field(
        default="sklearn", description="built-in trainer family (sklearn or torch)"
    )
    factory: str | None = Field(
        default=None,
        description="your own model: 'package.module:function' returning a scikit-learn "
        "estimator/Pipeline (trainer: sklearn) or a torch.nn.Module (trainer: torch)",
    )
    params: dict[str, Any] = Field(
        default={},
        description="keyword arguments for the built-in trainer (torch: also for training "
        "your module: epochs, lr, batch_size)",
    )
    model_params: dict[str, Any] = Field(
        default={}, description="keyword arguments for your factory"
    )
    trusted_types: list[str] = Field(
        default=[],
        description="skops types your model needs trusted to load (visible in review)",
    )
    holdout_fraction: float = Field(
        default=0.2, description="share of the lake held out (hash of the row) to judge the model"
    )


class Rollout(dg.Model):
    """How a gated model reaches traffic (the first model ever goes blue-green)."""

    strategy: Literal["blue_green", "canary", "shadow"] = "canary"
    canary_steps: list[float] = Field(default=[0.05, 0.25, 0.5, 1.0])
    shadow_fraction: float = Field(default=0.2, description="traffic mirrored to a shadow, (0, 1]")
    max_duration_s: float = Field(
        default=600.0, description="a rollout longer than this rolls back"
    )
    poll_interval_s: float = Field(default=2.0, description="seconds between canary analyses")
    alpha_rollback: float = Field(
        default=0.05,
        description="the canary analysis rolls back a model that is equal or better with "
        "at most this probability (all metrics together), in (0, 0.5]",
    )
    alpha_promote: float = Field(
        default=0.05,
        description="the canary analysis promotes a model worse by a margin or more with "
        "at most this probability, in (0, 0.5]",
    )


class Monitoring(dg.Model):
    """Windows of served traffic: live metrics and drift, one partition per window."""

    window_minutes: int = Field(default=60, description="divides an hour, or whole hours")
    start: str | None = Field(
        default=None,
        description="first window listed, 'YYYY-MM-DD' or 'YYYY-MM-DD-HH:MM' (UTC); "
        "default: history_days ago",
    )
    history_days: int = Field(default=7, description="days of windows listed when start is not set")


class ScaffoldParams(dg.Model):
    """``dg scaffold defs mlcicd_dagster.MLPipeline NAME --json-params '{...}'``."""

    # validated only when scaffolding: its schema is built then, not in every process
    model_config = {**dg.Model.model_config, "defer_build": True}

    data: str | None = None  # CSV/Parquet file to profile (as mlcicd init)
    label: str | None = None  # the label column of data
    task: Task | None = None  # binary | multiclass | regression (inferred when absent)
    id_column: str | None = None


TEMPLATE = """\
# {name}: an mlcicd_dagster.MLPipeline instance. Paths are relative to this folder.
# Fill in the columns of your data, put the golden set, the suite and the gates beside
# this file (or run `dg scaffold defs mlcicd_dagster.MLPipeline {name} --json-params
# '{{"data": "FILE", "label": "COLUMN"}}'`, i.e. `mlcicd init`, to have them written).
type: mlcicd_dagster.MLPipeline
attributes:
  task: binary                      # binary | multiclass | regression
  # classes: [0, 1]                 # label values in output order (multiclass: required)
  label: label                      # the label column
  # id_column: id                   # optional row ID (ints or strings)
  features:
    numeric: []                     # numeric feature columns
    categorical: []                 # categorical feature columns (ints or strings)
  training:
    trainer: sklearn                # sklearn | torch: the task's default model
    # factory: my_package.models:make_model   # or your own estimator / torch module
    params: {{}}
  golden: data/golden.csv.gz        # trusted labelled rows the gates judge on
  suite: expectations.yaml          # Great Expectations suite (the data gate)
  gates: gates.yaml                 # margins, slices, budgets of the model gates
  rollout: {{strategy: canary, canary_steps: [0.05, 0.25, 0.5, 1.0]}}
  monitoring: {{window_minutes: 60}}
  owners: []                        # emails or "team:name"
"""


class MLPipelineScaffolder(dg.Scaffolder[ScaffoldParams]):
    """With ``data`` and ``label``: profile the file as ``mlcicd init`` does and write the
    whole pipeline folder (instance, suite, sized gates, golden set). Without: a commented
    ``defs.yaml`` to fill in."""

    @classmethod
    def get_scaffold_params(cls) -> type[ScaffoldParams]:
        return ScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[ScaffoldParams]) -> None:
        target = Path(request.target_path)
        params = request.params or ScaffoldParams()
        if params.data is None:
            target.mkdir(parents=True, exist_ok=True)
            (target / "defs.yaml").write_text(TEMPLATE.format(name=target.name))
            return
        if params.label is None:
            raise ConfigError("scaffolding from data needs the label column", field="label")
        from mlcicd_dagster.init.scaffold import init_pipeline

        if target.exists() and any(target.iterdir()):
            raise ConfigError(f"{target} already exists and is not empty")
        if target.exists():
            target.rmdir()
        if target.parent.name != "assets":
            raise ConfigError(f"pipelines live in assets/<name>/, not {target.parent}")
        init_pipeline(
            target.name,
            Path(params.data).resolve(),
            label=params.label,
            task=params.task,
            id_column=params.id_column,
            root=target.parent.parent,
        )


@dg.scaffold_with(MLPipelineScaffolder)
class MLPipeline(dg.Component, dg.Resolvable, dg.Model):
    """One ML pipeline: data gate, training, model gates, rollout, monitoring.

    Builds the assets ``<name>/raw_batch -> validated_batch -> training_set -> model ->
    deployment -> monitoring``, their gates as blocking asset checks, the jobs and the
    sensors (landing zone, monitoring, retraining policy, run-failure alerts).
    """

    name: Annotated[str | None, _LITERAL] = Field(
        None,
        description="pipeline name: asset prefix, landing folder, MLflow model name "
        "(default: the folder's name)",
    )
    task: Annotated[Task, _LITERAL] = Field(..., description="binary | multiclass | regression")
    classes: Annotated[list[str | int] | None, _LITERAL] = Field(
        None,
        description="the label's values in output order; multiclass: required, binary: "
        "default [0, 1] (the second is the positive class), regression: none",
    )
    label: Annotated[str, _LITERAL] = Field(..., description="the label column")
    id_column: Annotated[str | None, _LITERAL] = Field(
        None, description="row ID column (ints or strings)"
    )
    features: Annotated[Features, _LITERAL]
    training: Annotated[Training, _LITERAL] = Field(Training())
    golden: Annotated[str, _LITERAL] = Field(
        ..., description="trusted labelled rows the gates judge on"
    )
    suite: Annotated[str, _LITERAL] = Field(
        "expectations.yaml", description="Great Expectations suite (YAML)"
    )
    gates: Annotated[str, _LITERAL] = Field(
        "gates.yaml", description="model gate margins, slices, budgets"
    )
    behavioral: Annotated[str | None, _LITERAL] = Field(None, description="behavioral tests (YAML)")
    sample: Annotated[str | None, _LITERAL] = Field(
        None, description="rows `mlcicd ci` runs the pipeline on"
    )
    rollout: Annotated[Rollout, _LITERAL] = Field(Rollout())
    monitoring: Annotated[Monitoring, _LITERAL] = Field(Monitoring())
    owners: Annotated[list[str], _LITERAL] = Field(
        default=[], description="asset owners: emails or 'team:name'"
    )
    description: Annotated[str | None, _LITERAL] = None
    data_bisect: Annotated[Literal["revoke", "report", "off"], _LITERAL] = Field(
        "revoke",
        description="after a candidate fails on the golden set: find the new batch to blame "
        "by retraining on subsets and revoke it, only report it, or off",
    )

    _pipeline: Any = PrivateAttr(default=None)

    # -- the typed config -----------------------------------------------------

    def to_spec(self, folder: Path, source: str | None = None) -> PipelineSpec:
        """Validate against the files in ``folder`` and resolve into a PipelineSpec."""
        folder = Path(folder).resolve()
        src = source or str(folder / "defs.yaml")
        name = self.name or folder.name

        def fail(field: str, message: str) -> ConfigError:
            return ConfigError(message, field=field, source=src)

        def path(field: str, value: str | None, *, required: bool = True) -> Path | None:
            if value is None:
                return None
            p = Path(value)
            p = p if p.is_absolute() else folder / p
            if required and not p.is_file():
                raise fail(field, f"file not found: {p}")
            return p

        if not name.isidentifier():
            raise fail("name", f"{name!r} must be a Python identifier (letters, digits, _)")
        numeric, categorical = list(self.features.numeric), list(self.features.categorical)
        features = [*numeric, *categorical]
        if not features:
            raise fail("features", "declare at least one numeric or categorical feature")
        dupes = sorted({f for f in features if features.count(f) > 1})
        if dupes:
            raise fail("features", f"listed more than once: {', '.join(dupes)}")
        if self.label in features:
            raise fail("label", f"{self.label!r} is also listed as a feature")
        if self.id_column is not None and self.id_column in features:
            raise fail("id_column", f"{self.id_column!r} is also listed as a feature")
        golden = path("golden", self.golden)
        assert golden is not None
        classes = class_keys(self.task, self.classes)
        facts = _golden_facts(golden, self.task, classes, self.label)
        columns = facts["columns"]
        if columns is not None:
            where = f"the golden set ({self.golden})"
            if self.label not in columns:
                raise fail("label", f"{self.label!r} is not a column of {where}")
            if self.id_column is not None and self.id_column not in columns:
                raise fail("id_column", f"{self.id_column!r} is not a column of {where}")
            missing = [f for f in features if f not in columns]
            if missing:
                raise fail("features", f"not columns of {where}: {', '.join(missing)}")
        # The task's rules (models.tasks), checked here without numpy: the code location
        # loads in every step process.
        if isinstance(classes, str):
            raise fail("classes", classes)
        if facts["labels"]:
            raise fail("label", f"golden set ({self.golden}): {facts['labels']}")
        factory = self.training.factory
        if factory is not None and factory.startswith("."):
            factory = _package_of(folder) + factory  # ".model:make": beside defs.yaml
        if factory is not None:
            problem = _factory_problem(factory)
            if problem:
                raise fail("training.factory", problem)
        elif self.training.model_params:
            raise fail("training.model_params", "only for your own factory (training.factory)")
        holdout = self.training.holdout_fraction
        if not 0 < holdout < 1:
            raise fail("training.holdout_fraction", f"{holdout} must be in (0, 1)")
        steps = list(self.rollout.canary_steps)
        if not steps or steps != sorted(steps) or steps[-1] != 1.0 or steps[0] <= 0:
            raise fail(
                "rollout.canary_steps", f"{steps}: increasing fractions in (0, 1] ending at 1.0"
            )
        if not 0 < self.rollout.shadow_fraction <= 1:
            raise fail("rollout.shadow_fraction", f"{self.rollout.shadow_fraction} not in (0, 1]")
        for f in ("max_duration_s", "poll_interval_s"):
            if getattr(self.rollout, f) <= 0:
                raise fail(f"rollout.{f}", "must be > 0")
        for f in ("alpha_rollback", "alpha_promote"):
            if not 0 < getattr(self.rollout, f) <= 0.5:
                raise fail(f"rollout.{f}", f"{getattr(self.rollout, f)} not in (0, 0.5]")
        if self.monitoring.history_days < 1:
            raise fail("monitoring.history_days", "must be >= 1")
        minutes = self.monitoring.window_minutes
        if minutes < 1 or (minutes < 60 and 60 % minutes) or (minutes >= 60 and minutes % 60):
            raise fail(
                "monitoring.window_minutes", f"{minutes} must divide an hour or be whole hours"
            )
        start = _window_start(self.monitoring.start)
        if self.monitoring.start is not None and start is None:
            raise fail("monitoring.start", f"{self.monitoring.start!r} is not YYYY-MM-DD[-HH:MM]")
        for owner in self.owners:
            if not ("@" in owner or owner.startswith("team:")):
                raise fail("owners", f"{owner!r}: an email address or 'team:name'")
        return PipelineSpec(
            dataset=name,
            model_name=name,
            label=self.label,
            id_column=self.id_column,
            numeric_features=tuple(numeric),
            categorical_features=tuple(categorical),
            suite_path=path("suite", self.suite),  # type: ignore[arg-type]
            gates_path=path("gates", self.gates),  # type: ignore[arg-type]
            behavioral_path=path("behavioral", self.behavioral),
            golden_path=golden,
            sample_path=path("sample", self.sample),
            holdout_fraction=holdout,
            trainer=self.training.trainer,
            trainer_params=dict(self.training.params),
            rollout=RolloutSpec(
                strategy=self.rollout.strategy,
                canary_steps=tuple(steps),
                shadow_fraction=self.rollout.shadow_fraction,
                max_duration_s=self.rollout.max_duration_s,
                poll_interval_s=self.rollout.poll_interval_s,
                alpha_rollback=self.rollout.alpha_rollback,
                alpha_promote=self.rollout.alpha_promote,
            ),
            monitoring_window_minutes=minutes,
            monitoring_start=start,
            monitoring_history_days=self.monitoring.history_days,
            task=self.task,
            classes=tuple(self.classes or ()),
            model_factory=factory,
            model_params=dict(self.training.model_params),
            trusted_types=tuple(self.training.trusted_types),
            owners=tuple(self.owners),
            description=self.description,
            data_bisect=self.data_bisect,
        )

    # -- Dagster --------------------------------------------------------------

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from mlcicd_dagster.pipeline.factory import build_pipeline
        from mlcicd_dagster.pipeline.sensors import build_sensors
        from mlcicd_dagster.platform.environments import current_environment

        spec = self.to_spec(context.path)
        pipeline = build_pipeline(spec)
        pipeline.sensors = build_sensors(pipeline, running=current_environment().sensors_running)
        self._pipeline = pipeline
        # the assets carry the owners from their construction (build_pipeline)
        return dg.Definitions(
            assets=pipeline.assets,
            asset_checks=pipeline.asset_checks,
            jobs=pipeline.jobs,
            sensors=pipeline.sensors,
        )

    @property
    def pipeline(self) -> Any:
        """The built :class:`PipelineDefs` (after ``build_defs``)."""
        if self._pipeline is None:
            raise ConfigError(f"pipeline {self.name or ''} was not built yet")
        return self._pipeline


def _golden_facts(
    golden: Path, task: str, classes: list[str | None] | str, label: str
) -> dict[str, Any]:
    """``columns`` of the golden set (None: not CSV/Parquet) and ``labels``: why its label
    column does not fit the task ("" when it does, or when the classes are invalid or the
    label is not a column: those are reported on their own). Remembered by the file's bytes
    (``platform.load_cache``): a process that loads the code location reads no golden set."""
    from mlcicd_dagster.platform.load_cache import remembered

    def compute() -> dict[str, Any]:
        columns = _columns(golden)
        problem = ""
        if columns is not None and label in columns and not isinstance(classes, str):
            values = _column_values(golden, label)
            problem = "" if values is None else _label_problem(task, classes, values)
        return {"columns": columns, "labels": problem}

    args = {"task": task, "classes": classes, "label": label}
    return remembered("golden", [golden], args, compute)


def _columns(path: Path) -> list[str] | None:
    """Column names of a CSV (header line only) or Parquet file (schema only)."""
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        import csv
        import gzip

        opener: Any = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", newline="") as fh:
            return next(csv.reader(fh), [])
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return None


def _column_values(path: Path, column: str) -> list[Any] | None:
    """One column of the golden set, parsed as pandas would (ints, floats, text; empty is
    None), without pandas: the code location loads this in every step process."""
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        import csv
        import gzip

        opener: Any = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", newline="") as fh:
            rows = csv.reader(fh)
            header = next(rows, [])
            i = header.index(column)
            return [_parse_cell(r[i]) if i < len(r) else None for r in rows]
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=[column]).column(0).to_pylist()
    return None


def _parse_cell(text: str) -> Any:
    if text.strip() == "":
        return None
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            continue
    return text


def _label_problem(task: str, classes: list[str | None], labels: list[Any]) -> str:
    """Why labels do not fit the task ("" when they do)."""
    counts: dict[str, int] = {}
    for v in labels:
        if task == "regression":
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        else:
            ok = label_key(v) in classes and label_key(v) is not None
        if not ok:
            shown = "<missing>" if label_key(v) is None else str(label_key(v))
            counts[shown] = counts.get(shown, 0) + 1
    if not counts:
        return ""
    shown = ", ".join(f"{v} ({c} rows)" for v, c in sorted(counts.items())[:10])
    if task == "regression":
        return f"regression label is not a finite number: {shown}"
    return f"label not one of the declared {task} classes {classes}: {shown}"


def _package_of(folder: Path) -> str:
    """The dotted package of ``folder`` (``assets.digits`` in the repository,
    ``mlcicd_dagster.examples.digits`` in the installed wheel)."""
    parts: list[str] = []
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if not parts:
        raise ConfigError(f"{folder} is not a Python package (no __init__.py)")
    return ".".join(parts)


def _factory_problem(dotted: str) -> str | None:
    """Why ``package.module:function`` (or ``package.module.function``) cannot be imported.

    Checked without importing the module (the code location loads in every step process;
    a factory's module may import torch): the module must be findable and define the name.
    """
    module, sep, attr = dotted.partition(":")
    if not sep:
        module, _, attr = dotted.rpartition(".")
    if not module or not attr or not attr.isidentifier():
        return f"{dotted!r}: write 'package.module:function'"
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        return f"{dotted!r} does not import: {exc}"
    if found is None:
        return f"{dotted!r} does not import: no module named {module!r}"
    origin = found.origin
    if origin and origin.endswith(".py") and Path(origin).is_file():
        from mlcicd_dagster.platform.load_cache import remembered

        # the module's top-level names, remembered by its bytes (no parse per process)
        names = remembered("module_names", [Path(origin)], {}, lambda: _top_level_names(origin))
        if attr not in names:
            return f"{dotted!r} does not import: {module} defines no {attr!r}"
    return None


def _top_level_names(origin: str) -> list[str]:
    tree = ast.parse(Path(origin).read_text(encoding="utf-8"), filename=origin)
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return sorted(names)


def _window_start(value: str | None) -> str | None:
    import datetime as dt

    if value is None:
        return None
    for fmt in ("%Y-%m-%d-%H:%M", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(str(value), fmt).strftime("%Y-%m-%d-%H:%M")
        except ValueError:
            continue
    return None


def load_component(folder: Path) -> MLPipeline:
    """The ``MLPipeline`` declared in ``<folder>/defs.yaml``, outside a Dagster load."""
    import yaml

    source = Path(folder) / "defs.yaml"
    try:
        raw = yamlio.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(source)) from exc
    if raw.get("type") != TYPE_NAME:
        raise ConfigError(f"type is {raw.get('type')!r}, not {TYPE_NAME}", source=str(source))
    return MLPipeline.resolve_from_dict(raw.get("attributes") or {})


def load_spec(folder: Path) -> PipelineSpec:
    """The resolved :class:`PipelineSpec` of ``<folder>/defs.yaml``."""
    return load_component(folder).to_spec(Path(folder))
