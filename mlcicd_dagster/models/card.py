"""Model card: what a model is, what it was trained on, how it did, what it is for.

Made for every registered version, stored in MLflow (run artifact
``model_card.md`` and the version's description) and shown in the Dagster UI
as Markdown metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlcicd_dagster.models.gates.base import GateResult, md_escape, md_row

DEFAULT_INTENDED_USE = (
    "Ranking and flagging cases for human review by the probability of the positive class. "
    "Not for fully automated adverse decisions."
)
DEFAULT_LIMITS = (
    "Trained on historical data: performance holds only while new data resembles it (drift is "
    "monitored). Slices below the minimum size were not judged. Probabilities are not "
    "guaranteed calibrated outside the ranges seen in training."
)


def _num(v: Any) -> str:
    """Numbers rounded for people (4 significant digits), text as is."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.4g}"
    if isinstance(v, str):
        try:
            return _num(float(v)) if any(c.isdigit() for c in v) and "." in v else v
        except ValueError:
            return v
    return str(v)


PARAM_MAX_CHARS = 120
"""A parameter's value in the card is cut here (the MLflow run has the whole value)."""


def card(
    *,
    model_name: str,
    version: str,
    trainer: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    data: Mapping[str, Any],
    gates: Sequence[GateResult] = (),
    champion_version: str | None = None,
    run_url: str | None = None,
    intended_use: str = DEFAULT_INTENDED_USE,
    limits: str = DEFAULT_LIMITS,
) -> str:
    """Markdown model card. ``data``: e.g. rows, positive_rate, fingerprint, features, label."""
    decision = (
        "not judged yet"
        if not gates
        else (
            "PASSED all gates"
            if all(g.passed for g in gates)
            else "FAILED: " + ", ".join(g.name for g in gates if not g.passed)
        )
    )
    versus = f"champion v{champion_version}" if champion_version else "no champion (first model)"
    lines = [
        f"# Model card: {model_name} v{version}",
        "",
        f"- Trainer: `{trainer}`",
        f"- Compared with: {versus}",
        f"- Gate decision: **{decision}**",
    ]
    if run_url:
        lines.append(f"- MLflow run: {run_url}")
    lines += ["", "## Intended use", intended_use, "", "## Data"]
    for k, v in data.items():
        if k == "features" and isinstance(v, list | tuple):
            v = ", ".join(map(str, v))
        lines.append(f"- {k}: {md_escape(_num(v))}")
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [md_row([k, _num(v)]) for k, v in metrics.items()]
    lines += ["", "## Parameters", "", "| parameter | value |", "|---|---|"]
    shown = {k: v for k, v in params.items() if k != "features"}
    lines += [md_row([k, _cut(_num(v))]) for k, v in sorted(shown.items())]
    if not shown:
        lines.append("| (none recorded) | |")
    slices = next((g for g in gates if g.name == "slices"), None)
    if slices is not None:
        lines += ["", "## Slices", "", slices.to_markdown()]
    if gates:
        lines += ["", "## Gates"]
        for g in gates:
            if g.name != "slices":
                lines += ["", g.to_markdown()]
    lines += ["", "## Limits", limits, ""]
    return "\n".join(lines)


def _cut(text: str) -> str:
    return text if len(text) <= PARAM_MAX_CHARS else text[: PARAM_MAX_CHARS - 3] + "..."


def store_card(
    tracking_uri: str, model_name: str, version: str, run_id: str, markdown: str
) -> None:
    """Store the card as run artifact ``model_card.md`` and as the version description."""
    from mlcicd_dagster.models.registry import client, set_version_description

    client(tracking_uri).log_text(run_id, markdown, "model_card.md")
    set_version_description(tracking_uri, model_name, version, description_of(markdown))


DESCRIPTION_MAX_CHARS = 5000
"""MLflow's column limit for a model version description (PostgreSQL enforces it)."""


def description_of(markdown: str) -> str:
    """The card as a version description: whole if it fits, else cut with a pointer."""
    if len(markdown) <= DESCRIPTION_MAX_CHARS:
        return markdown
    note = "\n\n... (cut here; the whole card is the run artifact model_card.md)"
    return markdown[: DESCRIPTION_MAX_CHARS - len(note)] + note
