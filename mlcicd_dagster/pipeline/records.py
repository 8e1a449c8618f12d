"""Small JSON records the pipeline keeps for ``mlcicd status`` and the next step.

Kept beside the data they describe, written atomically:
  lake/<ds>/model/candidate.json        the version the last ``model`` step produced
  lake/<ds>/model/gates-<version>.json  that version's gate results
  lake/<ds>/model/data-<version>.json   the batches that version was trained on
  monitoring/<model>/latest.json        the latest monitoring window's results
  monitoring/<model>/triggers.jsonl     retraining triggers, with cause and reason
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.atomic import atomic_write_json
from mlcicd_dagster.platform.home import Home


def model_dir(home: Home, spec: PipelineSpec) -> Path:
    return home.lake(spec.dataset) / "model"


def candidate_path(home: Home, spec: PipelineSpec) -> Path:
    return model_dir(home, spec) / "candidate.json"


def read_candidate(home: Home, spec: PipelineSpec) -> dict[str, Any] | None:
    return read_json(candidate_path(home, spec))


def write_candidate(home: Home, spec: PipelineSpec, record: dict[str, Any]) -> None:
    atomic_write_json(candidate_path(home, spec), record)


def version_data_path(home: Home, spec: PipelineSpec, version: str) -> Path:
    return model_dir(home, spec) / f"data-{version}.json"


def write_version_data(home: Home, spec: PipelineSpec, version: str, record: dict) -> None:
    """What ``version`` was trained on (its batches): data bisect's starting point."""
    atomic_write_json(version_data_path(home, spec, version), record)


def read_version_data(home: Home, spec: PipelineSpec, version: str) -> dict[str, Any] | None:
    return read_json(version_data_path(home, spec, version))


def gates_path(home: Home, spec: PipelineSpec, version: str) -> Path:
    return model_dir(home, spec) / f"gates-{version}.json"


def record_gate(home: Home, spec: PipelineSpec, version: str, gate: str, result: dict) -> None:
    path = gates_path(home, spec, version)
    current = read_json(path) or {}
    current[gate] = result
    atomic_write_json(path, current)


def read_gates(home: Home, spec: PipelineSpec, version: str) -> dict[str, Any]:
    return read_json(gates_path(home, spec, version)) or {}


def monitoring_dir(home: Home, spec: PipelineSpec) -> Path:
    return home.monitoring / spec.model_name


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


def read_jsonl(path: Path, last: int | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line after a crash is skipped, not fatal
    return rows[-last:] if last else rows
