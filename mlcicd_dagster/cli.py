"""``mlcicd``: the command line of PRODUCT.md (demo, serve, status, cycle, ci, ui).

Every subcommand imports what it needs when it runs, so ``mlcicd --help`` is instant.
The code location (``definitions.py``) is imported from the current directory,
as ``dagster -m definitions`` would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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

    ui = sub.add_parser("ui", help="dagster dev and the MLflow UI on the same home")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--mlflow-port", type=int, default=5000, help="the MLflow UI's port")
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


def _cmd_ui(args: argparse.Namespace) -> int:
    from mlcicd_dagster.platform import mlflow_ui
    from mlcicd_dagster.platform.dagster_home import ensure_dagster_home
    from mlcicd_dagster.platform.home import Home

    home = Home.from_env()
    env = {**os.environ, "DAGSTER_HOME": str(ensure_dagster_home(home))}
    env["MLCICD_HOME"] = str(home.root)
    home.mlflow_dir.mkdir(parents=True, exist_ok=True)
    # The MLflow UI on the same store: the run links in asset metadata open it.
    ui, ui_url = mlflow_ui.start_mlflow_ui(home.tracking_uri, args.mlflow_port)
    env[mlflow_ui.UI_URL_ENV] = ui_url
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "dev", "-m", CODE_LOCATION_MODULE, "-p", str(args.port)]
    print(f"Dagster UI on http://127.0.0.1:{args.port} (home {home.root})")
    print(f"MLflow UI on {ui_url} (store {home.tracking_uri})")
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        mlflow_ui.stop(ui)


if __name__ == "__main__":
    sys.exit(main())
