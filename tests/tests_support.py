"""Small helpers shared by test folders (importable as ``tests_support``)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "assets" / "credit_default" / "data"
