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

import gc
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
    defs_folder: Path | str,
    *,
    project_root: Path | None = None,
    sensors: Sequence[dg.SensorDefinition] = (),
) -> Location:
    """Load every component instance under ``defs_folder``: a folder beside importable
    code (``<root>/assets`` is imported as the package ``assets``) or a package's name
    (``"mlcicd_dagster.examples"``)."""
    # Everything imported so far (Dagster: a large heap) is long-lived: frozen, the
    # collector stops rescanning it at each of the thousands of allocations the
    # definitions make (~0.3 s per load); collection resumes afterwards.
    enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        return _load(defs_folder, project_root, sensors)
    finally:
        if enabled:
            gc.enable()
        gc.freeze()


def _load(
    defs_folder: Path | str, project_root: Path | None, sensors: Sequence[dg.SensorDefinition]
) -> Location:
    from dagster._utils.warnings import BetaWarning, PreviewWarning
    from dagster.components.core.component_tree import ComponentTree

    from mlcicd_dagster.component import MLPipeline
    from mlcicd_dagster.platform.environments import current_environment

    if isinstance(defs_folder, str):
        module = importlib.import_module(defs_folder)
        folder = Path(next(iter(module.__path__))).resolve()
        root = Path(project_root).resolve() if project_root else folder.parent
    else:
        folder = Path(defs_folder).resolve()
        root = Path(project_root).resolve() if project_root else folder.parent
        module = _import_folder(folder, root)
    tree = ComponentTree.from_module(defs_module=module, project_root=root)
    with warnings.catch_warnings():
        # Dagster's own loader uses its beta/preview APIs; not the user's business.
        warnings.simplefilter("ignore", category=BetaWarning)
        warnings.simplefilter("ignore", category=PreviewWarning)
        # The defs folder itself, not the tree's root: the root adds the JSON schema of
        # every component type installed (for the UI's catalog), ~0.5 s per load.
        pipeline_defs = tree.build_defs(tree.defs_module_path)
    pipelines: dict[str, Any] = {}
    for component in tree.get_all_components(of_type=MLPipeline):
        p = component.pipeline
        if p.spec.dataset in pipelines:
            raise ConfigError(f"two pipelines are named {p.spec.dataset!r}", field="name")
        pipelines[p.spec.dataset] = p
    env = current_environment()
    defs = dg.Definitions.merge(
        pipeline_defs,
        dg.Definitions(
            sensors=list(sensors),
            resources=env.resources(),
            executor=env.executor(),
            component_tree=tree,  # the UI's view of the defs folder
        ),
    )
    return Location(defs=defs, pipelines=pipelines, root=root, package=module.__name__)


def _import_folder(folder: Path, root: Path) -> Any:
    """Import ``folder`` as a package under ``root`` (``assets`` for ``<root>/assets``)."""
    rel = folder.relative_to(root)
    name = ".".join(rel.parts)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(name)
