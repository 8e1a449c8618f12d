"""Alerts reach a real HTTP receiver on loopback and the JSONL file; a dead sink never raises."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from mlcicd_dagster.platform.alerts import read_alerts, send_alert
from mlcicd_dagster.platform.home import Home


@pytest.fixture
def receiver():
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got
    server.shutdown()
    server.server_close()


def test_alert_goes_to_webhook_and_jsonl(tmp_path, monkeypatch, receiver):
    url, got = receiver
    monkeypatch.setenv("MLCICD_ALERT_WEBHOOK", url)
    home = Home(tmp_path / "home")
    send_alert(home, "gate_failed", "model v3 rejected", {"gate": "non_inferiority", "auc": 0.7})
    assert len(got) == 1
    payload = got[0]
    assert "model v3 rejected" in payload["text"] and payload["blocks"]
    assert payload["mlcicd"]["details"]["gate"] == "non_inferiority"
    [rec] = read_alerts(home)
    assert rec["kind"] == "gate_failed" and rec["webhook"].startswith("delivered")


def test_dead_webhook_never_raises(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    monkeypatch.setenv("MLCICD_ALERT_WEBHOOK", f"http://127.0.0.1:{port}/hook")
    home = Home(tmp_path / "home")
    send_alert(home, "run_failed", "run 1 failed", {"error": object()})
    monkeypatch.setenv("MLCICD_ALERT_WEBHOOK", "not a url")
    send_alert(home, "run_failed", "run 2 failed", {})
    recs = read_alerts(home)
    assert [r["title"] for r in recs] == ["run 1 failed", "run 2 failed"]
    assert all(r["webhook"].startswith("failed") for r in recs)


def test_no_webhook_and_unwritable_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MLCICD_ALERT_WEBHOOK", raising=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    send_alert(Home(blocker / "home"), "k", "t", {})  # cannot create: logged, not raised
    home = Home(tmp_path / "ok")
    send_alert(home, "k", "t", {"a": 1})
    assert read_alerts(home)[0]["details"] == {"a": 1}
