"""The model card renders: every table row has its columns, numbers are rounded,
parameters are listed."""

from __future__ import annotations

from mlcicd_dagster.models.card import card
from mlcicd_dagster.models.gates import GateResult


def _tables(markdown: str) -> list[list[str]]:
    tables, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def _cells(line: str) -> int:
    """Cells of a table row, not counting escaped pipes."""
    return line.replace("\\|", "").count("|") - 1


def test_card_tables_render_with_rounded_numbers_and_parameters():
    gate = GateResult(
        name="behavioral",
        passed=False,
        summary="1/2 pass; failed: sex_swap",
        rows=[
            {"test": "sex_swap", "value": "mean |d|=0.0213, max |d|=0.1400", "passed": False},
            {"test": "delay", "value": 0.123456789, "passed": True},
        ],
        rule="mean |d| not above the champion's by > 0.01",
        design={"false_rejection": 0.0011374, "power": 0.99},
    )
    text = card(
        model_name="m",
        version="3",
        trainer="sklearn",
        params={"max_iter": "100", "learning_rate": 0.1234567, "monotonic": "a|b"},
        metrics={"auc": 0.7812345678, "log_loss": 0.43},
        data={"rows": 6000, "positive_rate": 0.221234},
        gates=[gate],
        champion_version="2",
    )
    for table in _tables(text):
        widths = {_cells(line) for line in table}
        assert len(widths) == 1, table  # every row has the header's columns
    assert "| auc | 0.7812 |" in text and "0.7812345678" not in text
    assert "| learning_rate | 0.1235 |" in text and "| max_iter | 100 |" in text
    assert "a\\|b" in text and "mean \\|d\\|=0.0213" in text
    assert "0.123456789" not in text and "0.1235" in text
    assert "equally good model fails with probability 0.00114" in text
    assert "positive_rate: 0.2212" in text
