"""``python -m mlcicd_dagster.serving --model NAME [--host H] [--port P]``: the server alone.

What ``mlcicd serve`` runs; also how tests and benchmarks start it as a subprocess.
"""

from __future__ import annotations

import argparse
import logging

from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.serving.config import ServerConfig
from mlcicd_dagster.serving.server import serve


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mlcicd_dagster.serving")
    p.add_argument("--model", required=True, help="registered model name, e.g. credit_default")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--flush-interval", type=float, default=ServerConfig.flush_interval_s)
    p.add_argument("--max-wait-ms", type=float, default=ServerConfig.max_wait_ms)
    p.add_argument("--max-batch-rows", type=int, default=ServerConfig.max_batch_rows)
    p.add_argument("--scoring-threads", type=int, default=ServerConfig.scoring_threads)
    p.add_argument("--no-log", action="store_true", help="do not write the prediction log")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = ServerConfig(
        flush_interval_s=a.flush_interval,
        max_wait_ms=a.max_wait_ms,
        max_batch_rows=a.max_batch_rows,
        log_predictions=not a.no_log,
        scoring_threads=a.scoring_threads,
    )
    serve(Home.from_env(), a.model, a.host, a.port, config)


if __name__ == "__main__":
    main()
