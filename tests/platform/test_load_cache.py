"""Load-time checks remembered by the bytes they read: a change is checked again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlcicd_dagster.platform.load_cache import remembered


def test_a_check_runs_once_per_content_and_again_when_a_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCICD_CACHE_DIR", str(tmp_path / "cache"))
    suite = tmp_path / "suite.yaml"
    suite.write_text("a: 1\n")
    calls: list[str] = []

    def check() -> dict:
        calls.append(suite.read_text())
        return {"ok": True, "text": suite.read_text()}

    assert remembered("k", [suite], {"x": 1}, check) == {"ok": True, "text": "a: 1\n"}
    assert remembered("k", [suite], {"x": 1}, check)["text"] == "a: 1\n"
    assert len(calls) == 1  # the second process (here: call) reads the remembered result
    suite.write_text("a: 2\n")  # same size, new bytes: checked again
    assert remembered("k", [suite], {"x": 1}, check)["text"] == "a: 2\n"
    assert remembered("k", [suite], {"x": 2}, check)["text"] == "a: 2\n"  # new arguments
    assert len(calls) == 3


def test_a_failing_check_is_never_remembered_nor_an_unwritable_cache_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCICD_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "gates.yaml"
    bad.write_text("margin: -1\n")

    def check() -> bool:
        raise ValueError("margin must be > 0")

    for _ in range(2):
        with pytest.raises(ValueError, match="margin must be > 0"):
            remembered("gates", [bad], {}, check)
    # a file that is gone: the check itself says so
    with pytest.raises(FileNotFoundError):
        remembered("gates", [tmp_path / "nope.yaml"], {}, lambda: open(tmp_path / "nope.yaml"))
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MLCICD_CACHE_DIR", str(tmp_path / "file"))  # not a folder
    runs = []
    remembered("k", [bad], {}, lambda: runs.append(1))
    remembered("k", [bad], {}, lambda: runs.append(1))
    assert runs == [1, 1]


def test_the_code_location_refuses_a_bad_file_after_a_good_one_was_remembered(
    home_dir, tmp_path, monkeypatch
):
    """The shipped pipeline loads (its checks remembered); its suite then gets a drift rule
    on a column it does not have: the next load refuses it, naming the key."""
    import shutil

    from tests_support import ROOT

    from mlcicd_dagster.location import load_location

    assets = tmp_path / "assets_cache_case"
    shutil.copytree(ROOT / "assets" / "diabetes", assets / "diabetes")
    (assets / "__init__.py").write_text("")
    monkeypatch.setenv("MLCICD_CACHE_DIR", str(tmp_path / "cache"))
    load_location(assets)
    suite = assets / "diabetes" / "expectations.yaml"
    text = suite.read_text().replace(
        "mlcicd: {extra_columns: warn}",
        "mlcicd: {extra_columns: warn, drift: {block_on: [no_such_column]}}",
    )
    assert text != suite.read_text()
    suite.write_text(text)
    # a new process, as every step and CLI call is (this one keeps its parsed suite)
    code = (
        "from pathlib import Path; from mlcicd_dagster.location import load_location; "
        f"load_location(Path({str(assets)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "no_such_column" in out.stderr, out.stderr[-2000:]
    assert list((tmp_path / "cache" / "location").glob("drift_rules-*.json"))
    assert not (home_dir / "cache").exists()  # a home holds state only
