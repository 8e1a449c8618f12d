"""`mlcicd init` as a user runs it: what it writes, and every bad input refused cleanly.

Each refusal exits non-zero with one line naming the problem and leaves nothing
behind (no target folder, no staging folder).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from init_synth import draw

from mlcicd_dagster.cli import main
from mlcicd_dagster.data.suite import load_suite
from mlcicd_dagster.init import scaffold
from mlcicd_dagster.models.config import load_gate_config


def _init(root: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.chdir(root)
    return main(["init", *args])


def _left_in(root: Path) -> list[str]:
    assets = root / "assets"
    return sorted(p.name for p in assets.iterdir()) if assets.exists() else []


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "churn.csv"
    # text categories with gaps, a number column with gaps: the default trainer takes both
    draw(3000, seed=0).to_csv(path, index=False)
    return path


def test_writes_a_reviewable_pipeline(tmp_path, csv, monkeypatch, capsys):
    root = tmp_path / "repo"
    root.mkdir()
    assert _init(root, "churn", "--data", str(csv), "--label", "churned", "--id", "customer_id",
                 monkeypatch=monkeypatch) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "task binary (inferred from the label)" in out
    assert "passes non-inferiority with probability >=" in out and "is rejected with" in out
    folder = root / "assets" / "churn"
    names = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert names == {
        "defs.yaml",
        "expectations.yaml",
        "gates.yaml",
        "README.md",
        "data/golden.csv.gz",
        "data/sample.csv.gz",
    }
    defs = yaml.safe_load((folder / "defs.yaml").read_text())
    assert defs["type"] == "mlcicd_dagster.MLPipeline"
    attrs = defs["attributes"]
    assert attrs["task"] == "binary" and attrs["label"] == "churned"
    assert attrs["id_column"] == "customer_id"
    assert {"products", "region"} <= set(attrs["features"]["categorical"])
    assert attrs["classes"] == [0, 1]
    assert "income" in attrs["features"]["numeric"]
    suite = load_suite(folder / "expectations.yaml")
    # the label is declared once: defs.yaml; the suite and the gates file do not repeat it
    assert suite.label is None and suite.id_column is None
    assert "label" not in yaml.safe_load((folder / "gates.yaml").read_text())
    gates = load_gate_config(folder / "gates.yaml")  # reads it from defs.yaml beside it
    assert gates.label == "churned" and 0 < gates.auc_margin <= 0.1
    assert "rejected with probability >= 0.95" in (folder / "gates.yaml").read_text()
    # the design the gates check at load is the one measured here, and it holds
    assert set(gates.design.sd_per_row) == {"auc", "log_loss"}
    assert "every gate together" in out
    golden = pd.read_csv(folder / "data" / "golden.csv.gz")
    sample = pd.read_csv(folder / "data" / "sample.csv.gz")
    assert len(golden) + len(sample) == 3000
    assert not set(golden["customer_id"]) & set(sample["customer_id"])
    assert gates.design.holdout_rows == int(0.2 * len(sample))
    # stratified: the golden set keeps the file's class balance
    whole = pd.read_csv(csv)["churned"].mean()
    assert abs(golden["churned"].mean() - whole) < 0.02
    assert (root / "definitions.py").exists()  # a bare folder became a code location
    assert _left_in(root) == ["__init__.py", "churn"]


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, ["--label", "churned"], "data file not found"),
        ("garbage", ["--label", "churned"], "cannot read"),
        ("empty", ["--label", "churned"], "cannot read"),
        ("csv", ["--label", "nope"], "label column 'nope' is not in the data"),
        ("tiny", ["--label", "churned"], "too few rows for the gates"),
        ("one_class", ["--label", "churned"], "one class only"),
        ("rare_class", ["--label", "churned"], "too few rows for the gates"),
        ("csv", ["--label", "churned", "--id", "products"], "must be unique"),
    ],
)
def test_bad_input_is_refused_cleanly(tmp_path, monkeypatch, capsys, make, args, message):
    root = tmp_path / "repo"
    root.mkdir()
    data = tmp_path / "in.csv"
    frame = draw(3000, seed=0, strings=False, missing=False)
    if make == "garbage":
        data = tmp_path / "in.csv.gz"
        data.write_bytes(b"\x00\x01 this is not gzip")
    elif make == "empty":
        data.write_bytes(b"")
    elif make == "csv":
        frame.to_csv(data, index=False)
    elif make == "tiny":
        frame.head(120).to_csv(data, index=False)
    elif make == "one_class":
        frame.assign(churned=0).to_csv(data, index=False)
    elif make == "rare_class":
        frame.assign(churned=(frame.index < 5).astype(int)).to_csv(data, index=False)
    rc = _init(root, "churn", "--data", str(data), *args, monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert rc != 0
    assert message in err, err
    assert err.startswith("mlcicd: error:") and "Traceback" not in err
    assert _left_in(root) == []
    assert not (root / "definitions.py").exists()


def test_existing_folder_needs_force(tmp_path, csv, monkeypatch, capsys):
    root = tmp_path / "repo"
    (root / "assets" / "churn").mkdir(parents=True)
    (root / "assets" / "churn" / "mine.txt").write_text("keep me")
    assert _init(root, "churn", "--data", str(csv), "--label", "churned",
                 monkeypatch=monkeypatch) != 0  # fmt: skip
    assert "already exists" in capsys.readouterr().err and "--force" in "--force"
    assert (root / "assets" / "churn" / "mine.txt").read_text() == "keep me"
    assert _init(root, "churn", "--data", str(csv), "--label", "churned", "--force",
                 monkeypatch=monkeypatch) == 0  # fmt: skip
    assert not (root / "assets" / "churn" / "mine.txt").exists()
    assert (root / "assets" / "churn" / "defs.yaml").exists()
    assert _left_in(root) == ["churn"]


def test_a_failure_while_writing_leaves_nothing(tmp_path, csv, monkeypatch, capsys):
    """The disk fills up while the golden set is written: no folder, old one intact."""
    root = tmp_path / "repo"
    (root / "assets" / "churn").mkdir(parents=True)
    (root / "assets" / "churn" / "defs.yaml").write_text("# the reviewed one\n")
    real = scaffold._write_csv_gz

    def disk_full(df, path):
        real(df.head(10), path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scaffold, "_write_csv_gz", disk_full)
    with pytest.raises(OSError, match="No space"):
        scaffold.init_pipeline("churn", csv, label="churned", root=root, force=True)
    assert _left_in(root) == ["churn"]
    assert (root / "assets" / "churn" / "defs.yaml").read_text() == "# the reviewed one\n"
    with pytest.raises(OSError, match="No space"):
        scaffold.init_pipeline("other", csv, label="churned", root=root)
    assert _left_in(root) == ["churn"]


def test_bad_name_and_task(tmp_path, csv, monkeypatch, capsys):
    root = tmp_path / "repo"
    root.mkdir()
    assert _init(root, "9lives", "--data", str(csv), "--label", "churned",
                 monkeypatch=monkeypatch) != 0  # fmt: skip
    assert "Python identifier" in capsys.readouterr().err
    assert _init(root, "churn", "--data", str(csv), "--label", "churned", "--task", "regression",
                 monkeypatch=monkeypatch) == 0  # fmt: skip
    text = (root / "assets" / "churn" / "defs.yaml").read_text()
    assert "task: regression" in text


def test_console_script_exit_status(tmp_path, csv):
    """The real command in a fresh process: refusal is exit 2 with one line, no traceback."""
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "mlcicd_dagster.cli", "init", "x", "--data", "nope.csv",
           "--label", "y"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "mlcicd: error: data file not found: nope.csv"
    assert gzip  # (imported for the garbage case's name only)


@pytest.mark.parametrize(
    ("label", "task", "domain"),
    [("y_class", "multiclass", ["high", "low", "mid"]), ("y_value", "regression", None)],
)
def test_other_tasks_get_their_label_domain(tmp_path, monkeypatch, capsys, label, task, domain):
    frame = draw(1200, seed=3, strings=False, missing=False)
    value = frame["income"] / 1000 + frame["age"]
    frame["y_class"] = pd.qcut(value, 3, labels=["low", "mid", "high"]).astype(str)
    frame["y_value"] = value.round(3)
    frame = frame.drop(columns=["churned", "y_value" if label == "y_class" else "y_class"])
    data = tmp_path / "other.csv"
    frame.to_csv(data, index=False)
    root = tmp_path / "repo"
    root.mkdir()
    assert _init(root, "other", "--data", str(data), "--label", label,
                 monkeypatch=monkeypatch) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"task {task} (inferred from the label)" in out
    folder = root / "assets" / "other"
    assert yaml.safe_load((folder / "defs.yaml").read_text())["attributes"]["task"] == task
    suite = load_suite(folder / "expectations.yaml")
    rules = {(s.type, s.severity): s.kwargs for s in suite.expectations if s.column == label}
    if domain is not None:
        assert rules[("expect_column_values_to_be_in_set", "critical")]["value_set"] == domain
    else:
        between = rules[("expect_column_values_to_be_between", "critical")]
        assert (
            between["min_value"] <= frame[label].min()
            and between["max_value"] >= frame[label].max()
        )
    gates = (folder / "gates.yaml").read_text()
    # sized for the task by a power calculation (init.sizing.size_task), and said so
    assert "Sized by a power calculation" in gates and "rejected with probability >= 0.95" in gates
    keys = {"multiclass": ("loss_margin", "error_margin"),
            "regression": ("relative_margin", "relative_error_margin")}[task]  # fmt: skip
    cfg = load_gate_config(folder / "gates.yaml")
    assert all(getattr(cfg, k) > 0 for k in keys)
    assert set(cfg.design.sd_per_row) >= {"loss", "error"}
    assert "every gate together" in out  # the gates' own design check accepted it


def test_text_labels_binary(tmp_path, monkeypatch, capsys):
    """A yes/no label: classes in output order, the second (``yes``) is the positive one."""
    frame = draw(3000, seed=5)
    frame["churned"] = np.where(frame["churned"] == 1, "yes", "no")
    data = tmp_path / "text.csv"
    frame.to_csv(data, index=False)
    root = tmp_path / "repo"
    root.mkdir()
    assert _init(root, "text", "--data", str(data), "--label", "churned",
                 monkeypatch=monkeypatch) == 0  # fmt: skip
    attrs = yaml.safe_load((root / "assets" / "text" / "defs.yaml").read_text())["attributes"]
    assert attrs["task"] == "binary" and attrs["classes"] == ["no", "yes"]
    assert "auc: margin" in capsys.readouterr().out
