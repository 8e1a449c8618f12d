"""Revocation marks in the lake, content keys, and content run keys of landed files."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time

import pandas as pd
import pytest

from mlcicd_dagster.data.lake import Lake, LakeError, RevocationError
from mlcicd_dagster.data.landing import content_run_key, scan_landing


def _lake(tmp_path) -> Lake:
    lake = Lake(tmp_path / "lake")
    for i, name in enumerate(["a.csv", "b.csv", "c.csv"]):
        df = pd.DataFrame({"x": range(i, i + 10), "y": [0, 1] * 5})
        lake.write_validated(name, df, source={"file": name, "sha256": f"{i:064x}"})
    return lake


def test_a_revoked_batch_stays_in_the_lake_marked_and_out_of_training(tmp_path):
    lake = _lake(tmp_path)
    before = lake.content_key(lake.active_keys())
    mark = lake.revoke("b.csv", reason="labels inverted", by="ana")
    assert mark["by"] == "ana" and mark["reason"] == "labels inverted" and mark["at"]
    assert lake.keys() == ["a.csv", "b.csv", "c.csv"]  # kept, byte for byte
    assert lake.active_keys() == ["a.csv", "c.csv"]
    assert lake.batch_meta("b.csv")["revoked"]["by"] == "ana"
    assert lake.batch_meta("b.csv")["source_file"] == "b.csv"
    after_revoke = lake.content_key(lake.active_keys())
    assert after_revoke != before
    lake.restore("b.csv", by="ana")
    assert lake.active_keys() == ["a.csv", "b.csv", "c.csv"]
    # back to the same batches, yet a new key: the restore asks for a new model
    assert lake.content_key(lake.active_keys()) not in (before, after_revoke)
    assert [e["event"] for e in lake.revocation_history()] == ["revoke", "restore"]


def test_clear_errors(tmp_path):
    lake = _lake(tmp_path)
    with pytest.raises(RevocationError, match="no validated batch 'zzz'.*a.csv, b.csv"):
        lake.revoke("zzz", reason="x", by="me")
    with pytest.raises(RevocationError, match="needs a reason"):
        lake.revoke("a.csv", reason="  ", by="me")
    with pytest.raises(RevocationError, match="'a.csv' is not revoked"):
        lake.restore("a.csv", by="me")
    lake.revoke("a.csv", reason="first", by="me")
    with pytest.raises(RevocationError, match="already revoked \\(by me at .*: first\\)"):
        lake.revoke("a.csv", reason="second", by="you")
    assert lake.revoked()["a.csv"]["reason"] == "first"
    with pytest.raises(LakeError):
        lake.batch_meta("nope")


def _revoke_in_child(root, barrier, out):
    barrier.wait()
    try:
        Lake(root).revoke("c.csv", reason=f"pid {os.getpid()}", by=str(os.getpid()))
        out.put("ok")
    except RevocationError:
        out.put("refused")


def test_two_processes_revoking_at_once_one_wins(tmp_path):
    lake = _lake(tmp_path)
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_revoke_in_child, args=(lake.root, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert sorted(out.get(timeout=5) for _ in procs) == ["ok", "refused"]
    assert len(lake.revocation_history()) == 1


def test_content_run_keys_survive_a_copy_and_change_with_the_bytes(tmp_path):
    zone = tmp_path / "landing"
    zone.mkdir()
    (zone / "batch.csv").write_text("x,y\n1,0\n")
    past = time.time() - 10
    os.utime(zone / "batch.csv", (past, past))
    (first,) = scan_landing(zone, None, settle_seconds=0).new
    copy = tmp_path / "copy"
    shutil.copytree(zone, copy)  # new inodes, new ctimes: offered again ...
    (again,) = scan_landing(copy, None, settle_seconds=0).new
    assert again.ctime_ns != first.ctime_ns
    assert content_run_key(again) == content_run_key(first)  # ... under the same run key
    (copy / "batch.csv").write_text("x,y\n1,0\n2,1\n")  # a resumed write: new bytes
    (changed,) = scan_landing(copy, None, settle_seconds=0).new
    assert content_run_key(changed) != content_run_key(first)
    assert content_run_key(first).startswith("batch.csv@")
