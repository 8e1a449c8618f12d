"""The suite file, the fast pass vs Great Expectations, the real shipped data, the report."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from data_support import SUITE_FILE, mutations

from mlcicd_dagster.data.suite import SuiteError, load_suite, suite_from_dict
from mlcicd_dagster.data.validate import FAST_TYPES, validate_batch


def test_shipped_suite_is_real_ge_and_every_type_is_fast(suite) -> None:
    import great_expectations as gx

    gx_suite = suite.to_gx()
    assert isinstance(gx_suite, gx.ExpectationSuite)
    assert len(gx_suite.expectations) == len(suite.expectations)
    severities = {s.severity for s in suite.expectations}
    assert severities == {"critical", "warning"}  # both ERROR and WARN rules exist
    assert all(s.type in FAST_TYPES for s in suite.expectations)
    # The file is GE's own serialisation: GE re-reads what it wrote.
    again = gx.ExpectationSuite(**json.loads(json.dumps(gx_suite.to_json_dict())))
    assert len(again.expectations) == len(suite.expectations)


def test_real_shipped_data_passes_without_error(suite, pool, golden) -> None:
    for df in (pool, golden):
        report = validate_batch(df, suite)
        assert report.passed, report.summary()
        assert report.errors == [] and report.gx_checked == [] and report.warnings == []
    # GE itself agrees on the real data (the whole suite in GE, on the golden set).
    gx_report = validate_batch(golden, suite, engine="gx")
    assert gx_report.passed and not gx_report.failed, gx_report.summary()


CASES = mutations()


def test_fast_pass_and_ge_agree_on_every_bad_input(suite, pool) -> None:
    """Per expectation, the fast verdict equals GE's on each bad case (and on clean data)."""
    base = pool.iloc[:400].copy()
    frames = {"clean": base, **{name: fn(base.copy()) for name, (fn, _, _) in CASES.items()}}
    frames["extra column"] = base.assign(NOTE="x")
    frames["all bad at once"] = CASES["absurd age"][0](CASES["NaN"][0](CASES["infinite"][0](base)))
    frames["nullable ints (parquet)"] = base.astype({"AGE": "Int64", "SEX": "Int32"})
    frames["float codes"] = base.astype({"EDUCATION": "float64"})
    for name, df in frames.items():
        fast = validate_batch(df, suite, engine="fast")
        ge = validate_batch(df, suite, engine="gx")
        f = {r.id: r.success for r in fast.rows}
        g = {r.id: r.success for r in ge.rows}
        diff = {k: (f[k], g[k]) for k in f if f[k] != g[k]}
        assert not diff, f"{name}: fast vs GE disagree on {diff}"
        assert fast.passed == ge.passed, name
        assert fast.passed == (name in ("clean", "extra column", "nullable ints (parquet)")), name
        # counts agree too where both report them
        for fr, gr in zip(fast.rows, ge.rows, strict=True):
            if (
                not fr.success
                and gr.unexpected_count is not None
                and fr.unexpected_count is not None
            ):
                if "type_list" not in fr.expectation and "match_set" not in fr.expectation:
                    assert fr.unexpected_count == gr.unexpected_count, (name, fr.id)


def test_auto_engine_confirms_failures_with_ge(suite, sample) -> None:
    bad = sample.copy()
    bad.loc[bad.index[:4], "AGE"] = 500
    report = validate_batch(bad, suite)
    assert not report.passed and report.disagreements == []
    age = [r for r in report.errors if r.column == "AGE"]
    assert age and age[0].engine == "gx" and age[0].unexpected_count == 4
    assert age[0].sample_values == [500]
    assert age[0].unexpected_percent == pytest.approx(100 * 4 / len(bad))
    assert set(report.gx_checked) == {r.id for r in report.failed}


def test_report_metadata_and_json(suite, sample) -> None:
    bad = sample.copy()
    bad.loc[bad.index[:2], "SEX"] = 9
    report = validate_batch(bad, suite)
    md = report.to_metadata()
    table = md["expectations"]
    assert isinstance(table, dg.TableMetadataValue)
    first = table.records[0].data
    assert first["result"] == "FAIL" and first["column"] == "SEX" and first["severity"] == "ERROR"
    assert first["unexpected_count"] == 2 and "9" in first["sample_values"]
    assert len(table.records) == len(report.rows)
    assert md["errors"].value == 1
    doc = json.loads(report.to_json())
    assert doc["passed"] is False and doc["failed"][0]["column"] == "SEX"
    reason = report.reason()
    assert reason["columns"] == ["SEX"] and reason["failed_checks"][0]["unexpected_count"] == 2


def test_warn_lets_the_batch_through(suite, sample) -> None:
    odd = sample.copy()
    odd.loc[odd.index[0], "AGE"] = 90  # beyond the profiled 21..80, within 18..100
    report = validate_batch(odd, suite)
    assert report.passed and [r.column for r in report.warnings] == ["AGE"]
    assert "warnings" in report.summary()


def test_mostly_and_strict_bounds_follow_ge(tmp_path: Path) -> None:
    raw = {
        "name": "t",
        "expectations": [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "x", "min_value": 0, "max_value": 10, "mostly": 0.9},
            },
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "x", "min_value": 0, "max_value": 10, "strict_max": True},
            },
            {
                "type": "expect_column_values_to_be_in_set",
                "kwargs": {"column": "c", "value_set": ["a", "b"]},
            },
            {
                "type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "c", "mostly": 0.5},
            },
            {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "c"}},
        ],
    }
    suite = suite_from_dict(raw)
    df = pd.DataFrame({"x": [1.0] * 18 + [10.0, 11.0], "c": ["a", "b", "z", None] + [None] * 16})
    fast = validate_batch(df, suite, engine="fast")
    ge = validate_batch(df, suite, engine="gx")
    assert [r.success for r in fast.rows] == [r.success for r in ge.rows]
    assert [r.success for r in fast.rows][:3] == [True, False, False]


def test_suite_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\nexpectations: []\n")
    with pytest.raises(SuiteError, match="non-empty list"):
        load_suite(bad)
    bad.write_text("name: x\nexpectations:\n- {type: expect_x, severity: fatal}\n")
    with pytest.raises(SuiteError, match="severity"):
        load_suite(bad)
    bad.write_text(
        "name: x\nmeta: {mlcicd: {extra_columns: keep}}\nexpectations:\n- {type: expect_x}\n"
    )
    with pytest.raises(SuiteError, match="extra_columns"):
        load_suite(bad)
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SuiteError, match="not valid"):
        load_suite(bad)
    with pytest.raises(SuiteError, match="cannot read"):
        load_suite(tmp_path / "missing.yaml")
    # the label is declared once, in the pipeline's defs.yaml: the shipped suite names none
    assert load_suite(SUITE_FILE).label is None


def test_unsupported_expectation_types_run_in_ge(suite, sample) -> None:
    raw = {
        "name": "extra",
        "expectations": [
            {
                "type": "expect_column_pair_values_a_to_be_greater_than_b",
                "kwargs": {"column_A": "LIMIT_BAL", "column_B": "PAY_AMT1", "or_equal": True},
                "severity": "warning",
            }
        ],
    }
    s = suite_from_dict(raw)
    report = validate_batch(sample, s)
    assert report.gx_checked == [s.expectations[0].id] and report.rows[0].engine == "gx"
    bad = sample.copy()
    bad.loc[bad.index[0], "PAY_AMT1"] = 10**9
    r2 = validate_batch(bad, s)
    assert r2.passed and len(r2.warnings) == 1  # a WARN rule, judged by GE
    assert np.isfinite(r2.warnings[0].unexpected_count or 0)
