"""Quarantine (byte-identical, atomic, idempotent), the dedupe index, the Parquet lake."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcicd_dagster.data.fingerprint import DedupeIndex, file_sha256, row_hashes
from mlcicd_dagster.data.lake import Lake, LakeError
from mlcicd_dagster.data.landing import Refusal
from mlcicd_dagster.data.process import quarantine_refusal
from mlcicd_dagster.data.quarantine import list_quarantined, quarantine_file, record_refusal


def test_quarantine_copy_is_byte_identical_idempotent_and_never_overwrites(tmp_path: Path) -> None:
    src = tmp_path / "landing" / "bad batch.csv"
    src.parent.mkdir()
    data = os.urandom(3 * (1 << 20) + 17)  # > one copy chunk
    src.write_bytes(data)
    q = tmp_path / "q"
    reason = {"kind": "validation_failed", "failed_checks": [{"column": "AGE"}], "row_count": 5}
    first = quarantine_file(src, q, reason)
    assert first.read_bytes() == data and src.read_bytes() == data
    again = quarantine_file(src, q, reason)
    assert again == first  # same bytes: same entry
    src.write_bytes(b"other bytes")  # a new file under the same name
    other = quarantine_file(src, q, {"kind": "unreadable"})
    assert other != first and first.read_bytes() == data and other.read_bytes() == b"other bytes"
    assert "~" in other.name and other.name.endswith(".csv")
    listed = list_quarantined(q)
    assert {r["quarantined_as"] for r in listed} == {first.name, other.name}
    rec = json.loads((q / f"{first.name}.reason.json").read_text())
    assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["row_count"] == 5
    assert rec["failed_checks"] == [{"column": "AGE"}] and rec["copied"] is True
    assert not [p for p in q.iterdir() if p.name.startswith(".")]  # no temp files left


def test_quarantine_crash_leaves_no_partial_copy(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "x.csv"
    src.write_bytes(b"a,b\n" * 1000)
    q = tmp_path / "q"
    import mlcicd_dagster.data.quarantine as qmod

    monkeypatch.setattr(qmod, "file_sha256", lambda p: "0" * 64)  # verification fails
    with pytest.raises(qmod.QuarantineError):
        quarantine_file(src, q, {})
    assert list(q.iterdir()) == []


def test_refusal_is_recorded_without_reading_the_target(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("do not copy")
    zone = tmp_path / "landing"
    zone.mkdir()
    os.symlink(secret, zone / "link.csv")
    path = quarantine_refusal(
        Refusal(
            "link.csv", zone / "link.csv", "symlink points outside the landing zone", "link.csv"
        ),
        tmp_path / "q",
    )
    rec = json.loads(path.read_text())
    assert rec["copied"] is False and "outside" in rec["summary"]
    assert [p.name for p in (tmp_path / "q").iterdir()] == ["link.csv.reason.json"]
    assert list_quarantined(tmp_path / "q")[0]["path"] is None
    assert record_refusal("x", tmp_path / "q", {"kind": "refused"}).exists()


def test_row_hashes_ignore_column_order_and_int_float(pool) -> None:
    a = pool.head(50)
    b = a[list(reversed(a.columns))].astype({"AGE": "float64", "LIMIT_BAL": "int64"})
    assert np.array_equal(row_hashes(a), row_hashes(b))
    c = a.copy()
    c.loc[c.index[3], "AGE"] += 1
    diff = row_hashes(a) != row_hashes(c)
    assert diff.sum() == 1 and diff[3]


def test_dedupe_index(tmp_path: Path, pool) -> None:
    idx = DedupeIndex(tmp_path / "_dedupe")
    a = pool.iloc[:100]
    ha = row_hashes(a)
    assert idx.check("a", "sha-a", ha).status == "new"
    idx.register("a", "sha-a", ha, name="a.csv")
    assert idx.check("a", "sha-a", ha).status == "new"  # re-running the same partition
    assert idx.check("b", "sha-a", ha).status == "duplicate_file"
    dup = idx.check("b", "sha-b", ha[::-1])
    assert dup.status == "duplicate_rows" and dup.duplicate_of == ["a"]
    part = idx.check("c", "sha-c", row_hashes(pool.iloc[50:150]))
    assert part.status == "partial_overlap" and part.seen_rows == 50
    assert (
        part.seen_mask is not None and part.seen_mask[:50].all() and not part.seen_mask[50:].any()
    )
    assert idx.entries()["a"]["name"] == "a.csv"
    idx.forget("a")
    assert idx.check("b", "sha-a", ha).status == "new"


def test_dedupe_lock_serialises(tmp_path: Path) -> None:
    idx = DedupeIndex(tmp_path / "_dedupe")
    order: list[str] = []

    def worker(tag: str) -> None:
        with idx.lock():
            order.append(f"{tag}-in")
            threading.Event().wait(0.05)
            order.append(f"{tag}-out")

    ts = [threading.Thread(target=worker, args=(t,)) for t in "ab"]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert order in (["a-in", "a-out", "b-in", "b-out"], ["b-in", "b-out", "a-in", "a-out"])


def test_lake_validated_partitions(tmp_path: Path, pool) -> None:
    lake = Lake(tmp_path / "lake")
    assert lake.keys() == [] and lake.read_validated().empty
    lake.write_validated("b~123", pool.iloc[:10])
    lake.write_validated("a.csv", pool.iloc[10:30])
    assert lake.keys() == ["a.csv", "b~123"]
    both = lake.read_validated(with_partition=True)
    assert len(both) == 30 and set(both["_partition"]) == {"a.csv", "b~123"}
    assert "_partition" not in lake.read_validated(["a.csv"]).columns
    lake.write_validated("a.csv", pool.iloc[:5])  # a re-run replaces its partition
    assert len(lake.read_validated(["a.csv"])) == 5
    with pytest.raises(LakeError):
        lake.read_validated(["nope"])
    with pytest.raises(LakeError):
        lake.validated_path("../escape")


def test_training_set_swaps_atomically_and_consistently(tmp_path: Path, pool) -> None:
    lake = Lake(tmp_path / "lake")
    assert not lake.has_training_set()
    lake.write_training_set(pool.iloc[:100], pool.iloc[100:120], {"batches": ["a"]})
    train, hold, man = lake.read_training_set()
    assert (len(train), len(hold), man["batches"]) == (100, 20, ["a"])
    for i in range(3):
        lake.write_training_set(
            pool.iloc[: 200 + i], pool.iloc[300:330], {"batches": ["a", "b"], "i": i}
        )
    train, hold, man = lake.read_training_set()
    assert len(train) == 202 and man["i"] == 2 and man["train_rows"] == 202
    # the documented paths work for outside readers (DuckDB, pandas)
    assert len(pd.read_parquet(lake.training_set_dir / "train.parquet")) == 202
    versions = [p for p in lake.root.glob("training_set.v*")]
    assert len(versions) == 2  # current + one kept for readers mid-swap


def test_training_set_crash_keeps_previous(tmp_path: Path, pool, monkeypatch) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write_training_set(pool.iloc[:10], pool.iloc[10:12], {"v": 1})
    import mlcicd_dagster.data.lake as lake_mod

    real = lake_mod._write_parquet
    calls = {"n": 0}

    def flaky(path, df):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(path, df)

    monkeypatch.setattr(lake_mod, "_write_parquet", flaky)
    with pytest.raises(OSError):
        lake.write_training_set(pool.iloc[:50], pool.iloc[50:60], {"v": 2})
    train, _, man = lake.read_training_set()
    assert man["v"] == 1 and len(train) == 10
    assert not list(lake.root.glob(".training_set*"))  # staging cleaned up


def test_file_sha256(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x" * 3_000_000)
    assert file_sha256(p) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
