"""``mlcicd``: the command line (demo, init, serve, status, cycle, data, ci, ui).

Every subcommand imports what it needs when it runs, so ``mlcicd --help`` is instant.
The code location (``definitions.py``) is imported from the current directory,
as ``dagster -m definitions`` would. Every command takes ``--pipeline NAME``; without
it, ``status`` and ``cycle`` act on every pipeline of the code location, the others on
the only one (several need the flag).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mlcicd_dagster.errors import MlcicdError

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
    except MlcicdError as exc:
        print(f"mlcicd: error: {exc}", file=sys.stderr)
        return 2


class CliError(MlcicdError, RuntimeError):
    """A user-facing error: printed without a traceback."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlcicd", description="Continuous integration and delivery for ML, on Dagster."
    )
    sub = p.add_subparsers(title="commands")
    pick = argparse.ArgumentParser(add_help=False)
    pick.add_argument(
        "--pipeline",
        metavar="NAME",
        default=None,
        help="the pipeline to act on (default: every one for status/cycle, else the only one)",
    )

    demo = sub.add_parser(
        "demo", parents=[pick], help="the whole CI/CD story on the embedded defaults"
    )
    demo.set_defaults(func=_cmd_demo)

    serve = sub.add_parser("serve", parents=[pick], help="the model server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=_cmd_serve)

    status = sub.add_parser(
        "status", parents=[pick], help="what is deployed, gates, quarantine, monitoring"
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_cmd_status)

    cycle = sub.add_parser(
        "cycle", parents=[pick], help="evaluate the sensors once and run what they request"
    )
    cycle.add_argument("--json", action="store_true")
    cycle.set_defaults(func=_cmd_cycle)

    ci = sub.add_parser(
        "ci", parents=[pick], help="judge pipeline/model code changes against the champion"
    )
    ci.add_argument("--report", default="mlcicd-ci-report.md", help="Markdown report path")
    ci.add_argument("--sample-rows", type=int, default=6000)
    ci.set_defaults(func=_cmd_ci)

    data = sub.add_parser("data", help="revoke or restore a validated batch")
    data_sub = data.add_subparsers(title="data commands")
    revoke = data_sub.add_parser("revoke", help="take a validated batch out of the training data")
    revoke.add_argument("name", help="the pipeline")
    revoke.add_argument("batch", help="partition key or landed file name of the batch")
    revoke.add_argument("--reason", required=True, help="why (recorded with who and when)")
    revoke.set_defaults(func=_cmd_data_revoke)
    restore = data_sub.add_parser("restore", help="put a revoked batch back into training")
    restore.add_argument("name", help="the pipeline")
    restore.add_argument("batch", help="partition key or landed file name of the batch")
    restore.add_argument("--reason", default="", help="why (optional)")
    restore.set_defaults(func=_cmd_data_restore)
    data.set_defaults(func=lambda _args: _usage(data))

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

    ui = sub.add_parser("ui", parents=[pick], help="dagster dev and the MLflow UI on the same home")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--mlflow-port", type=int, default=5000, help="the MLflow UI's port")
    ui.set_defaults(func=_cmd_ui)
    return p


# -- helpers ------------------------------------------------------------------


SHIPPED_LOCATION_MODULE = "mlcicd_dagster.shipped"


def load_code_location(*, shipped_fallback: bool = False) -> Any:
    """Import ``definitions`` from the current directory (the repo root); where there is
    none and ``shipped_fallback``, the shipped example pipelines of the installed package."""
    import importlib

    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(CODE_LOCATION_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != CODE_LOCATION_MODULE:
            raise
        if shipped_fallback:
            print("No definitions.py here: the shipped example pipelines of the package.")
            return importlib.import_module(SHIPPED_LOCATION_MODULE)
        raise CliError(
            "no definitions.py here: run mlcicd from the code location's root "
            "(`mlcicd init NAME --data FILE --label COLUMN` makes one)"
        ) from None


def dagster_instance():
    """The installation's Dagster instance (SQLite under MLCICD_HOME/dagster by default)."""
    import dagster as dg

    from mlcicd_dagster.platform.dagster_home import ensure_dagster_home
    from mlcicd_dagster.platform.home import Home

    home = Home.from_env()
    os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(home))
    return dg.DagsterInstance.get()


# -- commands -----------------------------------------------------------------


def _location(module: Any) -> Any:
    """The :class:`Location` of the loaded code location (``definitions.location``)."""
    location = getattr(module, "location", None)
    if location is None:
        raise CliError(
            "definitions.py defines no `location`: build it with "
            "mlcicd_dagster.load_location(Path(__file__).parent / 'assets')"
        )
    return location


def _cmd_serve(args: argparse.Namespace) -> int:
    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.serving import serve

    p = _location(load_code_location()).pipeline(args.pipeline)
    serve(Home.from_env(), p.spec.model_name, host=args.host, port=args.port)
    return 0


def _cmd_cycle(args: argparse.Namespace) -> int:
    from mlcicd_dagster.pipeline.cycle import CycleInterrupted, run_cycle, stop_on_signals

    module = load_code_location()
    location = _location(module)
    instance = dagster_instance()
    reports = {}
    with stop_on_signals():
        try:
            for p in location.select(args.pipeline):
                names = [s.name for s in p.sensors]
                reports[p.spec.dataset] = run_cycle(module.defs, instance, sensor_names=names)
        except CycleInterrupted as exc:
            print(
                f"mlcicd: cycle stopped by {exc.signal_name}: the run in progress (if any) "
                "was failed and is redone by the next cycle; a rollout in flight is left "
                "consistent for the next tick",
                file=sys.stderr,
            )
            return exc.exit_code
    ok = all(r.ok for r in reports.values())
    if args.json:
        per = {name: r.to_dict() for name, r in reports.items()}
        out = {
            "ok": ok,
            "runs": [{**run, "pipeline": n} for n, d in per.items() for run in d["runs"]],
            "skipped": {k: v for d in per.values() for k, v in d["skipped"].items()},
            "pipelines": per,
        }
        print(json.dumps(out, indent=2, default=str))
    else:
        from mlcicd_dagster.pipeline.summary import print_cycle

        for name, report in reports.items():
            if len(reports) > 1:
                print(f"== {name}")
            print_cycle(report)
    return 0 if ok else 1


def _cmd_status(args: argparse.Namespace) -> int:
    from mlcicd_dagster.pipeline.status import BackendDown, bounded, collect_status, print_status

    location = _location(load_code_location())
    backends: dict[str, str] = {}
    try:
        instance = bounded("dagster", dagster_instance)
    except BackendDown as exc:
        backends["dagster"], instance = exc.why, None
    statuses = {
        p.spec.dataset: collect_status(p, instance, dict(backends))
        for p in location.select(args.pipeline)
    }
    if args.json:
        if args.pipeline is not None:
            out = statuses[args.pipeline]
        else:
            first = next(iter(statuses.values()), {})
            out = {
                "pipelines": statuses,
                "mlflow_tracking_uri": first.get("mlflow_tracking_uri"),
                "home": first.get("home"),
            }
        print(json.dumps(out, indent=2, default=str))
    else:
        for i, (name, status) in enumerate(statuses.items()):
            if len(statuses) > 1:
                print(("\n" if i else "") + f"== {name}")
            print_status(status)
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _pipeline(name: str) -> Any:
    return _location(load_code_location()).pipeline(name)


def _cmd_data_revoke(args: argparse.Namespace) -> int:
    from mlcicd_dagster.data.lake import RevocationError
    from mlcicd_dagster.pipeline.revocation import revoke
    from mlcicd_dagster.platform.home import Home

    p = _pipeline(args.name)
    try:
        mark = revoke(p.spec, Home.from_env(), args.batch, reason=args.reason)
    except RevocationError as exc:
        raise CliError(str(exc)) from None
    print(
        f"revoked {mark['partition_key']} of {args.name} (by {mark['by']} at {mark['at']}): "
        f"{mark['reason']}\nThe next `mlcicd cycle` (or the running daemon) trains without it."
    )
    return 0


def _cmd_data_restore(args: argparse.Namespace) -> int:
    from mlcicd_dagster.data.lake import RevocationError
    from mlcicd_dagster.pipeline.revocation import restore
    from mlcicd_dagster.platform.home import Home

    p = _pipeline(args.name)
    try:
        event = restore(p.spec, Home.from_env(), args.batch, reason=args.reason)
    except RevocationError as exc:
        raise CliError(str(exc)) from None
    print(
        f"restored {event['partition_key']} of {args.name} (by {event['by']} at {event['at']})"
        "\nThe next `mlcicd cycle` (or the running daemon) trains on it again."
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    # Windows of one minute so that the drift act need not wait for hourly ones;
    # set before the code location is built (the partitions are part of it).
    from mlcicd_dagster.demo.story_runner import MONITOR_WINDOW_MINUTES
    from mlcicd_dagster.pipeline.monitoring_assets import WINDOW_ENV

    os.environ.setdefault(WINDOW_ENV, str(MONITOR_WINDOW_MINUTES))
    module = load_code_location(shipped_fallback=True)
    name = args.pipeline or "credit_default"
    location = _location(module)
    location.pipeline(name)  # a clear error for an unknown name
    import importlib

    try:
        story = importlib.import_module(f"{location.package}.{name}.story")
    except ModuleNotFoundError:
        raise CliError(f"pipeline {name!r} ships no demo story ({name}/story.py)") from None
    return int(story.run_demo(module) or 0)


def _cmd_ci(args: argparse.Namespace) -> int:
    from mlcicd_dagster.pipeline.ci import run_ci

    p = _location(load_code_location()).pipeline(args.pipeline)
    report = Path(args.report)
    return run_ci(p, report_path=report, sample_rows=args.sample_rows)


def _cmd_init(args: argparse.Namespace) -> int:
    from mlcicd_dagster.init.scaffold import init_pipeline

    result = init_pipeline(  # an InitError (MlcicdError) is printed without a traceback
        args.name,
        Path(args.data),
        label=args.label,
        task=args.task,
        id_column=args.id_column,
        force=args.force,
    )
    for line in result.report():
        print(line)
    print(f"wrote {result.folder} in {result.seconds:.1f} s: " + ", ".join(result.files))
    if result.wrote_definitions:
        print("wrote definitions.py (the code location: every pipeline under assets/)")
    print(
        f"next: land batches in $MLCICD_HOME/landing/{args.name}/ (e.g. rows of "
        f"assets/{args.name}/data/sample.csv.gz), then `mlcicd cycle`"
    )
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    """``dg dev`` on the same home (``dg dev -m definitions`` where dg has no project
    config; the shipped pipelines where there is no definitions.py), and the MLflow UI on
    the same store: the MLflow run links in asset metadata open it."""
    from mlcicd_dagster.platform import mlflow_ui
    from mlcicd_dagster.platform.dagster_home import ensure_dagster_home
    from mlcicd_dagster.platform.home import Home

    home = Home.from_env()
    env = {**os.environ, "DAGSTER_HOME": str(ensure_dagster_home(home))}
    env["MLCICD_HOME"] = str(home.root)
    bindir = Path(sys.executable).parent
    cmd = [str(bindir / "dg"), "dev", "-p", str(args.port)]
    if not _is_dg_project(Path.cwd()):  # a code location without dg's project config
        module = CODE_LOCATION_MODULE
        if not (Path.cwd() / f"{module}.py").exists():
            module = SHIPPED_LOCATION_MODULE
        cmd += ["-m", module]
    home.mlflow_dir.mkdir(parents=True, exist_ok=True)
    ui, ui_url = mlflow_ui.start_mlflow_ui(home.tracking_uri, args.mlflow_port)
    env[mlflow_ui.UI_URL_ENV] = ui_url
    print(f"Dagster UI on http://127.0.0.1:{args.port} (home {home.root})")
    if args.pipeline:
        print(f"  assets of {args.pipeline}: http://127.0.0.1:{args.port}/asset-groups")
    print(f"MLflow UI on {ui_url} (store {home.tracking_uri})")
    from mlcicd_dagster.platform.supervise import supervise

    try:
        # SIGTERM/SIGINT stop every child (dagster dev stops its webserver and daemon).
        return supervise({"dagster": cmd}, env)
    finally:
        mlflow_ui.stop(ui)  # the MLflow UI too (a failure of it never stops Dagster's)


def _is_dg_project(root: Path) -> bool:
    """A ``pyproject.toml`` (or ``dg.toml``) here that configures a dg project."""
    import tomllib

    for name, keys in (("dg.toml", ("project",)), ("pyproject.toml", ("tool", "dg", "project"))):
        path = root / name
        if path.is_file():
            node: Any = tomllib.loads(path.read_text())
            for key in keys:
                node = node.get(key) if isinstance(node, dict) else None
            if node:
                return True
    return False


if __name__ == "__main__":
    sys.exit(main())
