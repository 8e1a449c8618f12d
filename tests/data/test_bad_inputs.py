"""Every bad input of the issue, end to end through ``process_landed_file``, and the valid shapes.

Each bad case: quarantined with a reason naming the problem, the landed original
untouched, the quarantine copy byte-identical, nothing in the lake.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from data_support import DATASET, mutations

from mlcicd_dagster.data.lake import Lake
from mlcicd_dagster.data.landing import partition_key_for
from mlcicd_dagster.data.process import BatchOutcome, process_landed_file
from mlcicd_dagster.data.suite import Suite
from mlcicd_dagster.platform.home import Home


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _land_bytes(home: Home, name: str, data: bytes) -> Path:
    path = home.landing(DATASET) / name
    path.write_bytes(data)
    return path


def _land_df(home: Home, name: str, df: pd.DataFrame) -> Path:
    path = home.landing(DATASET) / name
    if name.endswith(".parquet"):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def _process(home: Home, suite: Suite, path: Path, **kw) -> BatchOutcome:
    return process_landed_file(
        path,
        suite=suite,
        lake=Lake(home.lake(DATASET)),
        quarantine_dir=home.quarantine(DATASET),
        **kw,
    )


def _assert_quarantined(home: Home, path: Path, outcome: BatchOutcome, before: str) -> dict:
    assert outcome.status == "quarantined", outcome.to_dict()
    assert path.exists() and _sha(path) == before, "the landed file must stay as it was"
    assert outcome.quarantine_path is not None
    assert _sha(outcome.quarantine_path) == before, "quarantine copy must be byte-identical"
    reason_file = outcome.quarantine_path.with_name(outcome.quarantine_path.name + ".reason.json")
    reason = json.loads(reason_file.read_text())
    assert reason["sha256"] == before and reason["file"] == path.name
    assert not Lake(home.lake(DATASET)).has_validated(outcome.partition_key)
    return reason


# -- unreadable files ---------------------------------------------------------------


def _csv_bytes(df: pd.DataFrame, **kw) -> bytes:
    return df.to_csv(index=False, **kw).encode()


READ_CASES: dict[str, tuple[str, Callable[[pd.DataFrame], bytes], str]] = {
    "empty file": ("empty.csv", lambda df: b"", "empty"),
    "only newlines": ("blank.csv", lambda df: b"\n\n\r\n", "empty"),
    "header only": ("header.csv", lambda df: (",".join(df.columns) + "\n").encode(), "no_rows"),
    "wrong delimiter": ("semi.csv", lambda df: _csv_bytes(df, sep=";"), "wrong_delimiter"),
    "tab delimiter": ("tabs.csv", lambda df: _csv_bytes(df, sep="\t"), "wrong_delimiter"),
    "non-UTF-8": (
        "latin1.csv",
        lambda df: _csv_bytes(df)[:400] + "Zürich".encode("latin-1") + _csv_bytes(df)[400:],
        "not_utf8",
    ),
    "ragged rows": (
        "ragged.csv",
        lambda df: (
            _csv_bytes(df)
            + b"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27\n"
        ),
        "malformed_csv",
    ),
}


@pytest.mark.parametrize("case", list(READ_CASES))
def test_unreadable_csv_is_quarantined_with_reason(home, suite, sample, case) -> None:
    name, make, code = READ_CASES[case]
    path = _land_bytes(home, name, make(sample))
    before = _sha(path)
    out = _process(home, suite, path)
    reason = _assert_quarantined(home, path, out, before)
    assert reason["kind"] == "unreadable" and reason["reason"] == code, reason
    assert reason["summary"]


def _parquet_bytes(df: pd.DataFrame, tmp: Path) -> bytes:
    p = tmp / "x.parquet"
    df.to_parquet(p, index=False)
    return p.read_bytes()


def test_truncated_and_corrupt_parquet(home, suite, sample, tmp_path) -> None:
    good = _parquet_bytes(sample, tmp_path)
    truncated = _land_bytes(home, "truncated.parquet", good[: len(good) // 2])
    corrupt_mid = bytearray(good)
    corrupt_mid[8 : len(good) - 12] = b"\x00" * (len(good) - 20)  # magic intact, body gone
    corrupt = _land_bytes(home, "corrupt.parquet", bytes(corrupt_mid))
    not_parquet = _land_bytes(home, "csv-in-disguise.parquet", _csv_bytes(sample))
    for path in (truncated, corrupt, not_parquet):
        before = _sha(path)
        reason = _assert_quarantined(home, path, _process(home, suite, path), before)
        assert reason["reason"] == "corrupt_parquet", reason


def test_too_large_file_is_refused_with_the_limit(home, suite, sample) -> None:
    path = _land_df(home, "big.csv", sample)
    before = _sha(path)
    out = _process(home, suite, path, max_bytes=1000)
    reason = _assert_quarantined(home, path, out, before)
    assert reason["reason"] == "too_large"
    assert reason["details"]["max_bytes"] == 1000 and reason["details"]["size_bytes"] > 1000
    assert "limit" in reason["summary"]


# -- content the suite rejects --------------------------------------------------------


MUTATIONS = mutations()


@pytest.mark.parametrize("case", list(MUTATIONS))
@pytest.mark.parametrize("fmt", ["csv"])
def test_bad_content_is_quarantined_naming_check_and_column(home, suite, sample, case, fmt) -> None:
    mutate, etype, column = MUTATIONS[case]
    path = _land_df(home, f"bad {case}.{fmt}", mutate(sample))
    before = _sha(path)
    out = _process(home, suite, path)
    reason = _assert_quarantined(home, path, out, before)
    assert reason["kind"] == "validation_failed"
    errors = [c for c in reason["failed_checks"] if c["severity"] == "ERROR"]
    hit = [
        c
        for c in errors
        if c["expectation"] == etype
        and (
            c["column"] == column
            or column in json.dumps(c["sample_values"])
            or column in str(c["observed"])
        )
    ]
    assert hit, errors
    assert column in reason["columns"] or column in json.dumps(reason["failed_checks"])
    # the check says how many rows (for column checks)
    if hit[0]["column"]:
        assert hit[0]["unexpected_count"] and hit[0]["unexpected_count"] > 0


def test_string_in_numeric_column_shows_the_string(home, suite, sample) -> None:
    bad = sample.astype({"AGE": object})
    bad.loc[bad.index[7], "AGE"] = "forty"
    out = _process(home, suite, _land_df(home, "strings.csv", bad))
    row = next(
        r
        for r in out.reason["failed_checks"]
        if r["column"] == "AGE" and "type" in r["expectation"]
    )
    assert out.status == "quarantined" and row["severity"] == "ERROR"
    assert "forty" in json.dumps(row["sample_values"]) or "forty" in str(row["observed"])


def test_same_bytes_under_another_name_is_a_duplicate(home, suite, sample) -> None:
    first = _process(home, suite, _land_df(home, "jan.csv", sample))
    assert first.status == "accepted"
    copy = _land_bytes(home, "jan (copy).csv", (home.landing(DATASET) / "jan.csv").read_bytes())
    before = _sha(copy)
    out = _process(home, suite, copy)
    reason = _assert_quarantined(home, copy, out, before)
    assert reason["kind"] == "duplicate" and reason["status"] == "duplicate_file"
    assert reason["duplicate_of"] == ["jan.csv"]


def test_rows_already_ingested_in_another_format_are_a_duplicate(home, suite, sample) -> None:
    assert _process(home, suite, _land_df(home, "feb.csv", sample)).status == "accepted"
    # Same rows, re-exported: Parquet, shuffled, columns reordered, ints as floats.
    again = sample.sample(frac=1.0, random_state=1)[list(reversed(sample.columns))]
    again = again.astype({"LIMIT_BAL": "float64", "BILL_AMT1": "float64"})
    path = _land_df(home, "feb-again.parquet", again)
    before = _sha(path)
    out = _process(home, suite, path)
    reason = _assert_quarantined(home, path, out, before)
    assert reason["status"] == "duplicate_rows" and reason["seen_rows"] == len(sample)


def test_partial_overlap_keeps_only_new_rows(home, suite, pool) -> None:
    lake = Lake(home.lake(DATASET))
    assert _process(home, suite, _land_df(home, "a.csv", pool.iloc[:200])).status == "accepted"
    out = _process(home, suite, _land_df(home, "b.csv", pool.iloc[100:400]))
    assert out.status == "accepted" and out.rows_accepted == 200
    assert any("already ingested" in w for w in out.warnings)
    both = lake.read_validated()
    assert both["ID"].is_unique and len(both) == 400


def test_reprocessing_the_same_partition_is_idempotent(home, suite, sample) -> None:
    path = _land_df(home, "mar.csv", sample)
    assert _process(home, suite, path).status == "accepted"
    again = _process(home, suite, path)
    assert again.status == "accepted", again.to_dict()
    assert len(Lake(home.lake(DATASET)).read_validated()) == len(sample)


# -- valid shapes ----------------------------------------------------------------------


def _valid_shapes(sample: pd.DataFrame, tmp: Path) -> dict[str, bytes]:
    csv = _csv_bytes(sample)
    return {
        "bom.csv": b"\xef\xbb\xbf" + csv,
        "crlf.csv": csv.replace(b"\n", b"\r\n"),
        "bom crlf.csv": b"\xef\xbb\xbf" + csv.replace(b"\n", b"\r\n"),
        "batch.parquet": _parquet_bytes(sample, tmp),
        "reordered.csv": _csv_bytes(sample[sorted(sample.columns)]),
        "données été 2024 (v2).csv": csv,
        "日本語 batch.csv": csv,
        "no-trailing-newline.csv": csv.rstrip(b"\n"),
    }


def test_valid_shapes_are_accepted_with_identical_rows(home, suite, sample, tmp_path) -> None:
    lake = Lake(home.lake(DATASET))
    for name, data in _valid_shapes(sample, tmp_path).items():
        path = _land_bytes(home, name, data)
        # dedupe off: every shape carries the same rows, which dedupe would (rightly) refuse
        out = _process(home, suite, path, dedupe=False)
        assert out.status == "accepted", (name, out.to_dict())
        assert out.report is not None and out.report.passed and not out.report.warnings, name
        stored = pd.read_parquet(lake.validated_path(partition_key_for(name)))
        assert list(stored.columns) == list(suite.columns), name
        pd.testing.assert_frame_equal(
            stored.reset_index(drop=True),
            sample[list(suite.columns)].reset_index(drop=True),
            check_dtype=False,
        )


def test_extra_columns_follow_the_policy(home, suite, sample) -> None:
    extra = sample.assign(NOTE="hello")
    out = _process(home, suite, _land_df(home, "extra.csv", extra))
    assert out.status == "accepted"
    assert any(r.id == "mlcicd-extra-columns" and not r.success and r.severity == "WARN"
               for r in out.report.rows)  # fmt: skip
    assert "NOTE" not in pd.read_parquet(out.lake_path).columns
    from dataclasses import replace

    strict = replace(
        suite,
        expectations=tuple(
            replace(s, severity="critical") if s.id == "mlcicd-extra-columns" else s
            for s in suite.expectations
        ),
    )
    out2 = _process(home, strict, _land_df(home, "extra2.csv", extra.assign(ID=extra.ID + 10**6)))
    assert out2.status == "quarantined"


def test_nothing_partial_reaches_the_lake_when_the_write_fails(
    home, suite, sample, monkeypatch
) -> None:
    import pyarrow.parquet as pq

    real = pq.write_table

    def boom(table, where, *a, **k):
        real(table.slice(0, 10), where, *a, **k)  # half-written temp file ...
        raise OSError("disk full")  # ... then the crash

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        _process(home, suite, _land_df(home, "crash.csv", sample))
    lake = Lake(home.lake(DATASET))
    assert lake.keys() == []
    assert (
        not [p for p in lake.validated_dir.glob("*") if not p.name.startswith(".")]
        if lake.validated_dir.exists()
        else True
    )
    assert not list(lake.validated_dir.glob(".*")) if lake.validated_dir.exists() else True
    monkeypatch.setattr(pq, "write_table", real)
    # nothing was registered as ingested either: the retry is accepted
    assert _process(home, suite, home.landing(DATASET) / "crash.csv").status == "accepted"
    assert os.path.exists(lake.validated_path("crash.csv"))
