"""The model server: Starlette app, micro-batching, prediction log, metrics.

Heavy parts (uvicorn, starlette, pyarrow, the models) are imported only when used:
``from mlcicd_dagster.serving import serve`` resolves lazily.

    serve(home, model_name, host="127.0.0.1", port=8080, config=None)   # blocking
    ServerThread(home, model_name, port=0).start()                        # in-process
    start_subprocess(home, model_name, port=0) -> (Popen, url)            # child process
    create_app(home, model_name, config=None) -> Starlette                # ASGI app
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlcicd_dagster.serving.app import create_app
    from mlcicd_dagster.serving.config import ServerConfig
    from mlcicd_dagster.serving.server import ServerThread, serve, start_subprocess

__all__ = ["ServerConfig", "ServerThread", "create_app", "serve", "start_subprocess"]

_WHERE = {
    "serve": "server",
    "ServerThread": "server",
    "start_subprocess": "server",
    "create_app": "app",
    "ServerConfig": "config",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
