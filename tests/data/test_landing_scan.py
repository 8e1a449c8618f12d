"""The landing scan: cursor-based, never half-written files, odd names, symlinks out of the zone."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS

from mlcicd_dagster.data.landing import partition_key_for, scan_landing

LATER = 10.0  # seconds: a "now" by which every file written so far has settled


def _land(zone: Path, name: str, data: bytes = b"a,b\n1,2\n") -> Path:
    tmp = zone / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, zone / name)  # the documented convention: temp name, then rename
    return zone / name


def test_offers_each_finished_file_once_and_cursor_advances(tmp_path: Path) -> None:
    zone = tmp_path / "landing"
    zone.mkdir()
    _land(zone, "a.csv")
    _land(zone, "b.parquet")
    first = scan_landing(zone, None, settle_seconds=0, now=time.time() + LATER)
    assert sorted(f.name for f in first.new) == ["a.csv", "b.parquet"]
    assert all(f.size > 0 and f.partition_key == f.name for f in first.new)
    again = scan_landing(zone, first.cursor, settle_seconds=0, now=time.time() + LATER)
    assert again.new == [] and again.refused == []
    _land(zone, "c.csv")
    third = scan_landing(zone, again.cursor, settle_seconds=0, now=time.time() + LATER)
    assert [f.name for f in third.new] == ["c.csv"]
    # The cursor stays small: a watermark plus names of the last lookback window.
    assert len(third.cursor) < 400


def test_missing_landing_folder_is_empty(tmp_path: Path) -> None:
    res = scan_landing(tmp_path / "nope", None)
    assert res.new == [] and res.cursor


def test_foreign_cursor_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="landing cursor"):
        scan_landing(tmp_path, "not-json")


def test_in_progress_names_and_subfolders_are_ignored(tmp_path: Path) -> None:
    for name in (".hidden.csv", "x.csv.tmp", "y.csv.part", "z.partial", "w.csv.crdownload"):
        (tmp_path / name).write_bytes(b"a\n1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.csv").write_bytes(b"a\n1\n")
    res = scan_landing(tmp_path, None, settle_seconds=0, now=time.time() + LATER)
    assert res.new == [] and res.refused == []


def test_unsupported_type_is_refused_once(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    first = scan_landing(tmp_path, None, settle_seconds=0, now=time.time() + LATER)
    assert [r.name for r in first.refused] == ["notes.txt"]
    assert "unsupported file type" in first.refused[0].reason
    again = scan_landing(tmp_path, first.cursor, settle_seconds=0, now=time.time() + LATER)
    assert again.refused == []


def test_file_is_pending_until_quiet_for_settle_seconds(tmp_path: Path) -> None:
    _land(tmp_path, "fresh.csv")
    res = scan_landing(tmp_path, None, settle_seconds=5)
    assert res.new == [] and res.pending == ["fresh.csv"]
    later = scan_landing(tmp_path, res.cursor, settle_seconds=5, now=time.time() + 6)
    assert [f.name for f in later.new] == ["fresh.csv"]


def test_slow_copy_is_never_offered_half_written(tmp_path: Path) -> None:
    """A writer that appends in place (no rename) is only offered once it has finished."""
    target = tmp_path / "slow.csv"
    chunks = [b"ID,X\n"] + [f"{i},{i * 2}\n".encode() for i in range(12)]
    done = threading.Event()

    def writer() -> None:
        with open(target, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                fh.flush()
                time.sleep(0.08)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    cursor = None
    offered = []
    while not done.is_set():
        res = scan_landing(tmp_path, cursor, settle_seconds=0.5)
        cursor = res.cursor
        offered += res.new
        time.sleep(0.05)
    t.join()
    assert offered == []
    final = scan_landing(tmp_path, cursor, settle_seconds=0.5, now=time.time() + 1)
    assert [f.name for f in final.new] == ["slow.csv"]
    assert final.new[0].size == sum(len(c) for c in chunks)


def test_rewritten_file_is_offered_again(tmp_path: Path) -> None:
    path = _land(tmp_path, "r.csv")
    first = scan_landing(tmp_path, None, settle_seconds=0, now=time.time() + 1)
    assert len(first.new) == 1
    time.sleep(0.02)
    path.write_bytes(b"a,b\n1,2\n3,4\n")  # a stalled writer finishing later
    again = scan_landing(tmp_path, first.cursor, settle_seconds=0, now=time.time() + 2)
    assert [f.name for f in again.new] == ["r.csv"]
    assert again.new[0].partition_key == first.new[0].partition_key
    assert again.new[0].ctime_ns > first.new[0].ctime_ns


def test_symlink_out_of_zone_refused_inside_zone_followed(tmp_path: Path) -> None:
    zone = tmp_path / "landing"
    zone.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n1,2\n")
    os.symlink(secret, zone / "evil.csv")
    os.symlink(tmp_path / "missing.csv", zone / "dangling.csv")
    inside = _land(zone, "real.csv")
    os.symlink(inside, zone / "alias.csv")
    res = scan_landing(zone, None, settle_seconds=0, now=time.time() + LATER)
    refused = {r.name: r.reason for r in res.refused}
    assert "outside the landing zone" in refused["evil.csv"]
    assert (
        "outside the landing zone" in refused["dangling.csv"]
        or "dangling" in refused["dangling.csv"]
    )
    assert sorted(f.name for f in res.new) == ["alias.csv", "real.csv"]
    again = scan_landing(zone, res.cursor, settle_seconds=0, now=time.time() + LATER)
    assert again.refused == [] and again.new == []


def test_odd_names_get_safe_stable_unique_keys(tmp_path: Path) -> None:
    names = [
        "batch 2024-05 (final).csv",
        "batch_2024-05_(final).csv",
        "données été.csv",
        "données été.csv".replace("é", "e\u0301"),  # NFD form: same name, same key
        "日本語.parquet",
        "a...b.csv",
        "a_b.csv",
        "a b.csv",
        "x" * 300 + ".csv",
        "tab\there.csv",
        "comma,pipe|bracket[1].csv",
    ]
    keys = [partition_key_for(n) for n in names]
    assert keys[2] == keys[3]
    assert len(set(keys)) == len(names) - 1
    for k in keys:
        assert k == partition_key_for(k) or "~" in k
        assert len(k) <= 100
        assert all(bad not in k for bad in INVALID_PARTITION_SUBSTRINGS)
        assert not set(k) & set("|,[]/ \\")
        assert k.isascii() and not k.startswith(".")
    assert partition_key_for("a_b.csv") == "a_b.csv"  # plain names stay readable
    for n in names[:3] + names[4:5]:
        _land(tmp_path, n)
    res = scan_landing(tmp_path, None, settle_seconds=0, now=time.time() + LATER)
    assert sorted(f.name for f in res.new) == sorted(names[:3] + names[4:5])
