"""Alerts: a JSON line in ``Home.alerts`` and, when configured, a Slack-compatible webhook.

A sink that is down must never fail the run that raises the alert: the webhook
gets a short timeout, its errors are swallowed and the outcome is recorded in
the JSON line's ``webhook`` field; a JSONL write error is logged, not raised.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from mlcicd_dagster import settings
from mlcicd_dagster.platform.home import Home

WEBHOOK_ENV = "MLCICD_ALERT_WEBHOOK"
WEBHOOK_TIMEOUT_S = 3.0
"""Short: a slow chat service must not hold a pipeline step."""
_LOCK = threading.Lock()
log = logging.getLogger(__name__)


def _slack_payload(record: dict[str, Any]) -> dict[str, Any]:
    fields = "\n".join(f"*{k}*: {v}" for k, v in record["details"].items())
    text = f":rotating_light: [{record['kind']}] {record['title']}"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": fields[:2900] or "-"}},
        ],
        "mlcicd": record,
    }


def send_alert(home: Home, kind: str, title: str, details: dict[str, Any]) -> None:
    """Record an alert (JSONL) and post it to ``$MLCICD_ALERT_WEBHOOK`` if set. Never raises."""
    record = {
        "id": uuid.uuid4().hex,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": str(kind),
        "title": str(title),
        "details": json.loads(json.dumps(details, default=str)),
    }
    url = settings.get(WEBHOOK_ENV) or ""
    if url:
        record["webhook"] = _post(url, _slack_payload(record))
    try:
        line = json.dumps(record, sort_keys=True) + "\n"
        with _LOCK:
            home.alerts.parent.mkdir(parents=True, exist_ok=True)
            # One write() of one line in append mode: concurrent writers do not interleave.
            with open(home.alerts, "a", encoding="utf-8") as fh:
                fh.write(line)
    except OSError as exc:
        log.warning("could not record alert %s: %s", title, exc)


def _post(url: str, payload: dict[str, Any]) -> str:
    import urllib.error
    import urllib.request

    try:
        req = urllib.request.Request(
            url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=WEBHOOK_TIMEOUT_S) as resp:
            return f"delivered ({resp.status})"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("alert webhook failed: %s", exc)
        return f"failed: {exc}"


def read_alerts(home: Home) -> list[dict[str, Any]]:
    """All recorded alerts, oldest first (malformed lines skipped)."""
    if not home.alerts.exists():
        return []
    out = []
    for line in home.alerts.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
