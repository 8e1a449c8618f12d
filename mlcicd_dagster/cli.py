"""``mlcicd``: the command line (demo, init, serve, status, cycle, ci, ui).

Every subcommand imports what it needs when it runs, so ``mlcicd --help`` is instant.
The code location (``definitions.py``) is imported from the current directory,
as ``dagster -m definitions`` would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

CODE_LOCATION_MODULE = "definitions"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"mlcicd: error: {exc}", file=sys.stderr)
        return 2


class CliError(RuntimeError):
    """A user-facing error: printed without a traceback."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlcicd", description="Continuous integration and delivery for ML, on Dagster."
    )
    sub = p.add_subparsers(title="commands")

    demo = sub.add_parser("demo", help="the whole CI/CD story on the embedded defaults")
    demo.set_defaults(func=_cmd_demo)

    serve = sub.add_parser("serve", help="the model server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--model", default=None, help="registered model name (default: first)")
    serve.set_defaults(func=_cmd_serve)

    status = sub.add_parser("status", help="what is deployed, gates, quarantine, monitoring")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_cmd_status)

    cycle = sub.add_parser("cycle", help="evaluate the sensors once and run what they request")
    cycle.add_argument("--json", action="store_true")
    cycle.set_defaults(func=_cmd_cycle)

    ci = sub.add_parser("ci", help="judge pipeline/model code changes against the champion")
    ci.add_argument("--report", default="mlcicd-ci-report.md", help="Markdown report path")
    ci.add_argument("--sample-rows", type=int, default=6000)
    ci.set_defaults(func=_cmd_ci)

    init = sub.add_parser(
        "init", help="profile a data file and write assets/<name>/ (suite, gates, golden set)"
    )
    init.add_argument("name", help="pipeline name (asset prefix, landing folder, model name)")
    init.add_argument("--data", required=True, help="CSV, CSV.gz or Parquet file to profile")
    init.add_argument("--label", required=True, help="the label column")
    init.add_argument("--task", choices=("binary", "multiclass", "regression"), default=None)
    init.add_argument("--id", dest="id_column", default=None, help="row id column")
    init.add_argument("--force", action="store_true", help="replace an existing assets/<name>/")
    init.set_defaults(func=_cmd_init)

    ui = sub.add_parser("ui", help="dagster dev on the same home")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=_cmd_ui)
    return p


# -- helpers ------------------------------------------------------------------


def load_code_location() -> Any:
    """Import ``definitions`` from the current directory (the repo root)."""
    import importlib

    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(CODE_LOCATION_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == CODE_LOCATION_MODULE:
            raise CliError("no definitions.py here: run mlcicd from the repository root") from None
        raise


def dagster_instance():
    """The installation's Dagster instance (SQLite under MLCICD_HOME/dagster by default)."""
    import dagster as dg

    from mlcicd_dagster.platform.dagster_home import ensure_dagster_home
    from mlcicd_dagster.platform.home import Home

    home = Home.from_env()
    os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(home))
    return dg.DagsterInstance.get()


# -- commands -----------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.serving import serve

    module = load_code_location()
    model = args.model or module.credit_default.spec.model_name
    serve(Home.from_env(), model, host=args.host, port=args.port)
    return 0


def _cmd_cycle(args: argparse.Namespace) -> int:
    from mlcicd_dagster.pipeline.cycle import run_cycle

    module = load_code_location()
    instance = dagster_instance()
    report = run_cycle(module.defs, instance)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        from mlcicd_dagster.pipeline.summary import print_cycle

        print_cycle(report)
    return 0 if report.ok else 1


def _cmd_status(args: argparse.Namespace) -> int:
    from mlcicd_dagster.pipeline.status import collect_status, print_status

    module = load_code_location()
    status = collect_status(module.credit_default, dagster_instance())
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print_status(status)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    # Windows of one minute so that the drift act need not wait for hourly ones;
    # set before the code location is built (the partitions are part of it).
    from mlcicd_dagster.demo.story_runner import MONITOR_WINDOW_MINUTES
    from mlcicd_dagster.pipeline.monitoring_assets import WINDOW_ENV

    os.environ.setdefault(WINDOW_ENV, str(MONITOR_WINDOW_MINUTES))
    module = load_code_location()
    from assets.credit_default.story import run_demo

    return int(run_demo(module) or 0)


def _cmd_ci(args: argparse.Namespace) -> int:
    from mlcicd_dagster.pipeline.ci import run_ci

    module = load_code_location()
    report = Path(args.report)
    return run_ci(module.credit_default, report_path=report, sample_rows=args.sample_rows)


def _cmd_init(args: argparse.Namespace) -> int:
    from mlcicd_dagster.init.errors import InitError
    from mlcicd_dagster.init.scaffold import init_pipeline

    try:
        result = init_pipeline(
            args.name,
            Path(args.data),
            label=args.label,
            task=args.task,
            id_column=args.id_column,
            force=args.force,
        )
    except InitError as exc:
        raise CliError(str(exc)) from None
    for line in result.report():
        print(line)
    print(f"wrote {result.folder} in {result.seconds:.1f} s: " + ", ".join(result.files))
    if result.wrote_definitions:
        print("wrote definitions.py (the code location: every pipeline under assets/)")
    print(
        f"next: land batches in $MLCICD_HOME/landing/{args.name}/ (e.g. rows of "
        f"{result.folder.name}/data/sample.csv.gz), then `mlcicd cycle`"
    )
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from mlcicd_dagster.platform.dagster_home import ensure_dagster_home
    from mlcicd_dagster.platform.home import Home

    home = Home.from_env()
    env = {**os.environ, "DAGSTER_HOME": str(ensure_dagster_home(home))}
    env["MLCICD_HOME"] = str(home.root)
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "dev", "-m", CODE_LOCATION_MODULE, "-p", str(args.port)]
    print(f"Dagster UI on http://127.0.0.1:{args.port} (home {home.root})")
    print(f"MLflow UI: mlflow ui --backend-store-uri {home.tracking_uri}")
    os.execve(cmd[0], cmd, env)
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
