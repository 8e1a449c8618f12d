"""Import time of the code location: ``python -c "import definitions"`` in cold processes.

Goal: median <= 1.5 s. Baseline measured in the same run: ``import dagster`` alone
(what any Dagster code location pays), so the ratio shows what our code adds.

    .venv/bin/python -m bench.bench_import
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._report import write_section

ROOT = Path(__file__).resolve().parent.parent
RUNS = 7
GOAL_S = 1.5
HEAVY = ("torch", "mlflow", "great_expectations", "sklearn")


def _time_import(stmt: str, env: dict[str, str]) -> float:
    code = f"import time; t=time.perf_counter(); {stmt}; print(time.perf_counter()-t)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _wall(stmt: str, env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", stmt], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - t


def main() -> int:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "MLCICD_HOME": home}
        _wall("import definitions", env)  # warm the OS file cache once; bytecode too
        defs = [_wall("import definitions", env) for _ in range(RUNS)]
        base = [_wall("import dagster", env) for _ in range(RUNS)]
        inner = [_time_import("import definitions", env) for _ in range(RUNS)]
        leaked = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, definitions; print(','.join(m for m in "
                f"{HEAVY!r} if m in sys.modules))",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    med, med_base, med_inner = (statistics.median(x) for x in (defs, base, inner))
    verdict = "PASS" if med <= GOAL_S and not leaked else "FAIL"
    lines = [
        "Command: `.venv/bin/python -m bench.bench_import`",
        "",
        "| measure (median of 7 cold processes) | seconds |",
        "|---|---|",
        f"| `python -c 'import definitions'` (whole process) | {med:.2f} |",
        f"| `python -c 'import dagster'` (baseline, same run) | {med_base:.2f} |",
        f"| import statement alone, inside the process | {med_inner:.2f} |",
        "",
        f"Ratio to the bare Dagster import: {med / med_base:.2f}x. Goal <= {GOAL_S} s: "
        f"**{verdict}**. Heavy modules loaded by the import: {leaked or 'none'}.",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("Code location import time", body)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
