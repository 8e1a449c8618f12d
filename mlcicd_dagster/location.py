"""A code location from a folder of pipelines: every ``<folder>/<name>/defs.yaml``.

``definitions.py`` is three lines with this::

    from mlcicd_dagster.location import load_location
    location = load_location(Path(__file__).parent / "assets")
    defs = location.defs

It loads the folder as a Dagster defs folder (each ``defs.yaml`` one component
instance, e.g. ``mlcicd_dagster.MLPipeline``), adds the executor and resources of the
environment (``MLCICD_ENV``) and keeps each pipeline's :class:`PipelineDefs` by name
for the command line (``location.pipelines``).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from mlcicd_dagster.errors import ConfigError


@dataclass
class Location:
    defs: dg.Definitions
    pipelines: dict[str, Any] = field(default_factory=dict)  # name -> PipelineDefs
    root: Path | None = None
    package: str = "assets"  # the defs folder as a Python package (stories live there)

    def pipeline(self, name: str | None) -> Any:
        """The pipeline ``name``; ``None``: the only one (several need a name)."""
        if name is None:
            if len(self.pipelines) == 1:
                return next(iter(self.pipelines.values()))
            if not self.pipelines:
                raise ConfigError("this code location has no pipeline")
            raise ConfigError(
                f"several pipelines ({', '.join(sorted(self.pipelines))}): choose one "
                "with --pipeline NAME"
            )
        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise ConfigError(f"no pipeline {name!r} here (pipelines: {known})") from None

    def select(self, name: str | None) -> list[Any]:
        """Every pipeline (``None``) or the one named."""
        return list(self.pipelines.values()) if name is None else [self.pipeline(name)]


def load_location(
    defs_folder: Path,
    *,
    project_root: Path | None = None,
    sensors: Sequence[dg.SensorDefinition] = (),
) -> Location:
    """Load every component instance under ``defs_folder`` (an importable package)."""
    from dagster._utils.warnings import BetaWarning, PreviewWarning
    from dagster.components.core.component_tree import ComponentTree

    from mlcicd_dagster.component import MLPipeline
    from mlcicd_dagster.platform.environments import current_environment

    defs_folder = Path(defs_folder).resolve()
    root = Path(project_root).resolve() if project_root else defs_folder.parent
    module = _import_folder(defs_folder, root)
    tree = ComponentTree.from_module(defs_module=module, project_root=root)
    with warnings.catch_warnings():
        # Dagster's own loader uses its beta/preview APIs; not the user's business.
        warnings.simplefilter("ignore", category=BetaWarning)
        warnings.simplefilter("ignore", category=PreviewWarning)
        pipeline_defs = tree.build_defs()
    pipelines: dict[str, Any] = {}
    for component in tree.get_all_components(of_type=MLPipeline):
        p = component.pipeline
        if p.spec.dataset in pipelines:
            raise ConfigError(f"two pipelines are named {p.spec.dataset!r}", field="name")
        pipelines[p.spec.dataset] = p
    env = current_environment()
    defs = dg.Definitions.merge(
        pipeline_defs,
        dg.Definitions(sensors=list(sensors), resources=env.resources(), executor=env.executor()),
    )
    return Location(defs=defs, pipelines=pipelines, root=root, package=module.__name__)


def _import_folder(folder: Path, root: Path) -> Any:
    """Import ``folder`` as a package under ``root`` (``assets`` for ``<root>/assets``)."""
    rel = folder.relative_to(root)
    name = ".".join(rel.parts)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(name)
