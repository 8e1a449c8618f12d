"""A fresh virtual environment for a built wheel, without a network or a pip cache.

``python -m venv`` makes a new environment (no system site-packages, nothing of this
repository). Its dependencies come from the environment running the tests, but only
those the *wheel's own metadata* asks for: the closure of its ``Requires-Dist`` (markers
evaluated, extras followed) is resolved against the installed distributions, and each
one's files (its RECORD) are linked into the new ``site-packages`` (hard links, a copy
across file systems), console scripts written from its entry points. Then the wheel is
installed with ``pip install --no-deps --no-index`` (this interpreter's pip, pointed at
the new one) and ``pip check`` verifies every
requirement of every distribution there. A dependency the wheel forgets to declare is
therefore missing in the new environment, as it would be for a user, while nothing is
downloaded (the full install takes ~10 minutes and needs a network).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The ``Requires-Dist`` of a built wheel (its METADATA, not the installed copy)."""
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        text = zf.read(meta).decode()
    reqs = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            reqs.append(Requirement(line.split(":", 1)[1].strip()))
        elif not line.strip():
            break  # the body (long description) follows the headers
    return reqs


def _applies(req: Requirement, extras: Iterable[str]) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    return any(req.marker.evaluate({**env, "extra": e}) for e in (*extras, ""))


def dependency_closure(reqs: Iterable[Requirement]) -> dict[str, md.Distribution]:
    """Installed distributions that satisfy ``reqs`` and, recursively, theirs.

    Raises ``LookupError`` naming a requirement nothing installed satisfies."""
    found: dict[str, md.Distribution] = {}
    todo: list[tuple[Requirement, tuple[str, ...]]] = [(r, ()) for r in reqs]
    seen_extras: dict[str, set[str]] = {}
    while todo:
        req, parent_extras = todo.pop()
        if not _applies(req, parent_extras):
            continue
        name = canonicalize_name(req.name)
        try:
            dist = found.get(name) or md.distribution(req.name)
        except md.PackageNotFoundError:
            raise LookupError(f"{req} is not installed here") from None
        if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            raise LookupError(f"{req}: installed {dist.version}")
        extras = set(req.extras)
        if name in found and extras <= seen_extras[name]:
            continue
        found[name] = dist
        seen_extras.setdefault(name, set()).update(extras)
        for sub in dist.requires or []:
            todo.append((Requirement(sub), tuple(extras)))
    return found


def _link(src: Path, dst: Path) -> None:
    if dst.exists():  # a file two distributions both list (mlflow and mlflow-skinny)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _console_script(bin_dir: Path, python: Path, name: str, value: str) -> None:
    module, _, attr = value.partition(":")
    attr = attr.split("[")[0].strip()
    head, _, tail = attr.partition(".")
    call = f"{head}.{tail}" if tail else head
    script = bin_dir / name
    script.write_text(
        f"#!{python}\nimport sys\nfrom {module.strip()} import {head}\nsys.exit({call}())\n"
    )
    script.chmod(0o755)


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH (a checkout on it would count as installed), no active venv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def make_fresh_venv(venv: Path, wheel: Path) -> list[str]:
    """Create ``venv`` with ``wheel`` and its dependency closure; returns their names."""
    env = _clean_env()
    # without pip of its own (ensurepip takes ~20 s): this pip installs into it (--python)
    subprocess.run(
        [sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True
    )
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout.strip()
    )
    deps = dependency_closure(wheel_requirements(wheel))
    project = canonicalize_name(wheel.name.split("-")[0])
    deps.pop(project, None)
    for dist in deps.values():
        base = os.path.normpath(str(dist.locate_file("")))
        for f in dist.files or []:
            src = os.path.normpath(os.path.join(base, str(f)))
            if not src.startswith(base + os.sep) or "__pycache__" in src:
                continue  # ../../bin/x: scripts are written below, from the entry points
            if os.path.isfile(src):
                _link(Path(src), site / os.path.relpath(src, base))
        for ep in dist.entry_points:
            if ep.group == "console_scripts":
                _console_script(venv / "bin", python, ep.name, ep.value)
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, env=env
    )
    return sorted(deps)


def pip_check(venv: Path) -> subprocess.CompletedProcess:
    """``pip check`` of the environment: every installed distribution's requirements."""
    python = venv / "bin" / "python"
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "check"],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
