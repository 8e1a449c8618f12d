"""Write one benchmark's section of docs/benchmarks.md (each bench owns its section)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nEvery figure is a ratio against a baseline measured in the same run, "
    "on the 2-core CI-sized machine unless said otherwise. Each section names the command "
    "that produced it.\n"
)


def write_section(name: str, body: str) -> None:
    """Replace (or append) the ``## name`` section of docs/benchmarks.md."""
    text = DOC.read_text() if DOC.exists() else HEADER
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text.rstrip() + "\n")
