"""Landing-sensor tick over a folder of 10,000 files vs a plain ``os.scandir`` listing.

Run: ``.venv/bin/python -m bench.bench_landing [--files N] [--no-write]``

Measured in one run on the same folder (warm page cache):
* baseline: ``[e.name for e in os.scandir(zone)]`` (a listing, no stat);
* a listing that also stats every entry (what any change-watching sensor needs);
* ``scan_landing`` first tick (all files new: cursor ``None``);
* ``scan_landing`` steady tick (nothing new, cursor past the lookback window: the
  usual case), the tick right after the first (every name still in the cursor's
  lookback set) and a busy tick (10 new files among N);
Goal (issue 3): a tick over 10,000 files well under a second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench._report import write_section
from mlcicd_dagster.data.landing import scan_landing

REPEATS = 7


def _median(fn) -> float:
    out = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def run(files: int) -> tuple[str, bool]:
    with tempfile.TemporaryDirectory() as tmp:
        zone = Path(tmp) / "landing"
        zone.mkdir()
        for i in range(files):
            (zone / f"batch-{i:06d}.csv").write_bytes(b"a,b\n1,2\n")
        for i in range(50):  # in-progress names the scan must skip
            (zone / f".incoming-{i}.csv.tmp").write_bytes(b"a")

        def listing() -> None:
            with os.scandir(zone) as it:
                [e.name for e in it]

        def listing_stat() -> None:
            with os.scandir(zone) as it:
                [e.stat(follow_symlinks=False).st_ctime_ns for e in it]

        # Real clock; a short lookback so that the steady state is reached within the run.
        look = 1.0
        t_list = _median(listing)
        t_stat = _median(listing_stat)
        t_first = _median(lambda: scan_landing(zone, None, settle_seconds=0))
        first = scan_landing(zone, None, settle_seconds=0)
        assert len(first.new) == files
        # Right after the first tick every name is in the cursor's lookback set (largest cursor).
        t_recent = _median(lambda: scan_landing(zone, first.cursor, settle_seconds=0))
        assert not scan_landing(zone, first.cursor, settle_seconds=0).new
        time.sleep(look + 0.2)
        steady_cursor = scan_landing(
            zone, first.cursor, settle_seconds=0, lookback_seconds=look
        ).cursor
        t_steady = _median(
            lambda: scan_landing(zone, steady_cursor, settle_seconds=0, lookback_seconds=look)
        )
        assert not scan_landing(zone, steady_cursor, settle_seconds=0, lookback_seconds=look).new
        for i in range(10):
            (zone / f"new-{i}.csv").write_bytes(b"a,b\n1,2\n")
        busy = scan_landing(zone, steady_cursor, settle_seconds=0, lookback_seconds=look)
        assert len(busy.new) == 10, len(busy.new)
        t_busy = _median(
            lambda: scan_landing(zone, steady_cursor, settle_seconds=0, lookback_seconds=look)
        )

    ok = max(t_first, t_steady, t_busy, t_recent) < 0.5
    body = "\n".join(
        [
            "Command: `.venv/bin/python -m bench.bench_landing`",
            "",
            f"Folder: {files:,} landed files (+50 in-progress temp names). Median of "
            f"{REPEATS} ticks, warm cache.",
            "",
            "| measure | seconds | / plain listing |",
            "|---|---|---|",
            f"| plain `os.scandir` listing, names only (baseline) | {t_list:.4f} | 1.00x |",
            f"| listing + `lstat` of every entry | {t_stat:.4f} | {t_stat / t_list:.1f}x |",
            f"| `scan_landing` first tick (all {files:,} new) | {t_first:.4f} | "
            f"{t_first / t_list:.1f}x |",
            f"| `scan_landing` steady tick (nothing new) | {t_steady:.4f} | "
            f"{t_steady / t_list:.1f}x |",
            f"| `scan_landing` tick right after the first (all {files:,} in the cursor's "
            f"lookback set, {len(first.cursor) // 1024} KiB cursor) | {t_recent:.4f} | "
            f"{t_recent / t_list:.1f}x |",
            f"| `scan_landing` busy tick (10 new among {files:,}) | {t_busy:.4f} | "
            f"{t_busy / t_list:.1f}x |",
            "",
            f"Steady cursor size: {len(steady_cursor)} bytes. Goal: a tick over 10,000 files "
            f"well under a second (< 0.5 s): **{'PASS' if ok else 'FAIL'}**. The cost is one "
            "listing plus one `lstat` per entry; no file is opened.",
        ]
    )
    return body, ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    body, ok = run(args.files)
    print(body)
    if not args.no_write:
        write_section("bench_landing", body)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
