"""kill -9 of a server subprocess under load, restart, and graceful SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
from serving_support import MODEL, deploy, read_log, split_body

FLUSH_S = 0.2


def _load(url: str, body: dict, stop: threading.Event, answered: list[tuple[float, list[str]]]):
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.is_set():
            try:
                r = client.post("/invocations", json=body)
            except httpx.HTTPError:
                return  # the server died
            if r.status_code == 200:
                answered.append((time.monotonic(), r.headers["X-Request-Id"].split(",")))


def test_kill_9_under_load_then_restart(home, registry, tmp_path):
    from mlcicd_dagster.serving import start_subprocess

    state = deploy(home, stable="1", canary=("2", 0.5))
    args = ["--flush-interval", str(FLUSH_S)]
    proc, url = start_subprocess(home, MODEL, port=0, extra_args=args, log_path=tmp_path / "a.log")
    try:
        with httpx.Client(base_url=url, timeout=5) as client:
            deadline = time.monotonic() + 180  # a subprocess importing mlflow, two models
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, (tmp_path / "a.log").read_text()
                time.sleep(0.1)
        body = split_body(registry.features, registry.rows.iloc[:2])
        stop = threading.Event()
        answered: list[tuple[float, list[str]]] = []
        threads = [
            threading.Thread(target=_load, args=(url, body, stop, answered)) for _ in range(3)
        ]
        for t in threads:
            t.start()
        time.sleep(1.5)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        proc.kill()
    assert len(answered) > 20
    # Readable with DuckDB, every part whole, and every row one the server answered.
    logged = read_log(home.predictions(MODEL))
    answered_ids = {rid for _, ids in answered for rid in ids}
    assert set(logged["request_id"]) <= answered_ids
    assert logged["request_id"].is_unique
    # Intact up to the last flush: everything answered a flush interval (plus slack for
    # a loaded machine) before the kill is there.
    margin = 3 * FLUSH_S + 0.5
    old = {rid for t, ids in answered if t < killed_at - margin for rid in ids}
    assert old and old <= set(logged["request_id"])
    assert json.loads(home.server_file.read_text())["pid"] == proc.pid  # stale, not removed

    # Restarted, it serves the same deployment and writes its own server file.
    proc, url = start_subprocess(home, MODEL, port=0, extra_args=args, log_path=tmp_path / "b.log")
    try:
        with httpx.Client(base_url=url, timeout=5) as client:
            deadline = time.monotonic() + 180  # a subprocess importing mlflow, two models
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, (tmp_path / "b.log").read_text()
                time.sleep(0.1)
            doc = client.get("/deployment").json()
            assert doc["served_revision"] == state.revision
            assert {t: m["version"] for t, m in doc["loaded"].items()} == {
                "stable": "1",
                "canary": "2",
            }
            r = client.post("/invocations", json=body)
            assert r.status_code == 200
            new_ids = r.headers["X-Request-Id"].split(",")
            assert not set(new_ids) & answered_ids
            # Graceful stop: answered rows are all flushed and the server file is removed.
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    finally:
        proc.kill()
    assert not home.server_file.exists()
    assert set(new_ids) <= set(read_log(home.predictions(MODEL))["request_id"])
