"""``LocalTarget``: the embedded model server on this machine.

The server (``mlcicd serve``) follows the deployment state file
``Home.deployment_state(model)`` and hot-swaps models when it changes, so for this
target "apply" is "record the state in that file" and "serving" is "the running
server reports that revision on ``GET /deployment``". A running server announces
itself in ``Home.server_file`` (JSON ``{host, port, pid, started_at}``). When no
server runs, smoke tests score in-process through the same ``load_predictor`` the
server uses, so a model that cannot load or answer is still caught before it
takes traffic.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.models.predictor import Predictor
from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.rollout import state as st
from mlcicd_dagster.rollout.target import (
    DeployTarget,
    DeployTargetError,
    check_scores,
    check_track,
)

TRACK_HEADER = "X-Track"  # asks the server to score on one track (smoke tests)
POLL_S = 0.05  # how often wait_until_serving asks the server; loopback calls are cheap
HTTP_TIMEOUT_S = 10.0  # a smoke batch on loopback answers in milliseconds; 10 s means "stuck"
REVISION_KEYS = ("served_revision", "loaded_revision", "revision")  # what /deployment may say

PredictorLoader = Callable[[st.ModelRef], Predictor]


def _default_loader(tracking_uri: str | None) -> PredictorLoader:
    def load(ref: st.ModelRef) -> Predictor:
        from mlcicd_dagster.models.loading import load_predictor

        return load_predictor(ref.model_uri, tracking_uri=tracking_uri, version=ref.version)

    return load


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class LocalTarget(DeployTarget):
    """The embedded server under ``home``; in-process scoring when no server runs."""

    kind = "local"

    def __init__(
        self,
        home: Home,
        model_name: str,
        *,
        tracking_uri: str | None = None,
        predictor_loader: PredictorLoader | None = None,
    ) -> None:
        super().__init__(model_name, home.deployment_state(model_name))
        self.home = home
        self._load = predictor_loader or _default_loader(tracking_uri or home.tracking_uri)
        self._predictors: dict[str, Predictor] = {}

    # -- infrastructure ------------------------------------------------------
    def apply(self, state: st.DeploymentState) -> None:
        """The state file *is* what the server follows: make sure it holds ``state``."""
        if state.model_name != self.model_name:
            raise DeployTargetError(f"state is for {state.model_name!r}, not {self.model_name!r}")
        current = self.read_state()
        if current.to_dict() != state.to_dict():
            st.write_state(self.state_path, state)

    def server_address(self) -> str | None:
        """``http://host:port`` of a live server, or None (no file, dead pid, bad file)."""
        try:
            info = json.loads(self.home.server_file.read_text())
            host, port, pid = str(info["host"]), int(info["port"]), int(info.get("pid", 0))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if info.get("home") not in (None, str(self.home.root)):
            return None  # a copied home's file names the original's server: not ours
        if pid and not _pid_alive(pid):
            return None
        if info.get("model_name") not in (None, self.model_name):
            return None  # another pipeline's server (one home, several pipelines)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    def served_revision(self) -> int | None:
        """The state revision the running server reports serving, None if unreachable."""
        address = self.server_address()
        if address is None:
            return None
        import httpx

        try:
            resp = httpx.get(f"{address}/deployment", timeout=HTTP_TIMEOUT_S)
            resp.raise_for_status()
            body = resp.json()
        except (httpx.HTTPError, ValueError):
            return None
        for key in REVISION_KEYS:
            if isinstance(body, dict) and key in body:
                try:
                    return int(body[key])
                except (TypeError, ValueError):
                    return None
        return None

    def wait_until_serving(
        self,
        revision: int,
        timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> bool:
        """No server running: the file is all there is, so True once it holds ``revision``.
        A server running: True once its ``/deployment`` reports ``revision`` or later."""
        deadline = clock() + timeout_s
        while True:
            if self.server_address() is None:
                return self.read_state().revision >= revision
            served = self.served_revision()
            if served is not None and served >= revision:
                return True
            if clock() >= deadline:
                return False
            sleep(POLL_S)

    # -- scoring ---------------------------------------------------------------
    def smoke(self, track: str, rows: pd.DataFrame) -> np.ndarray:
        check_track(track)
        ref = getattr(self.read_state(), track)
        if ref is None:
            raise DeployTargetError(f"nothing deployed on track {track!r}")
        if len(rows) == 0:
            raise DeployTargetError("smoke test needs at least one row")
        address = self.server_address()
        if address is None:
            return self._smoke_in_process(ref, rows)
        return self._smoke_http(address, track, ref, rows)

    def _smoke_in_process(self, ref: st.ModelRef, rows: pd.DataFrame) -> np.ndarray:
        try:
            predictor = self._predictors.get(ref.model_uri)
            if predictor is None:
                predictor = self._load(ref)
                self._predictors[ref.model_uri] = predictor
            scores = predictor.predict(rows)
        except DeployTargetError:
            raise
        except Exception as exc:  # any load/score failure is a failed smoke test
            raise DeployTargetError(f"version {ref.version} failed in-process: {exc!r}") from exc
        return check_scores(scores, len(rows), f"version {ref.version} (in-process)")

    def _smoke_http(
        self, address: str, track: str, ref: st.ModelRef, rows: pd.DataFrame
    ) -> np.ndarray:
        import httpx

        payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        try:
            resp = httpx.post(
                f"{address}/invocations",
                json=payload,
                headers={TRACK_HEADER: track, "X-Routing-Key": "mlcicd-smoke"},
                timeout=HTTP_TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            raise DeployTargetError(f"server at {address} unreachable: {exc!r}") from exc
        if resp.status_code != 200:
            raise DeployTargetError(
                f"smoke on {track} got HTTP {resp.status_code}: {resp.text[:300]}"
            )
        served = resp.headers.get("X-Model-Version")
        if served is not None and served != ref.version:
            raise DeployTargetError(
                f"smoke on {track} answered by version {served}, expected {ref.version}"
            )
        from mlcicd_dagster.serving.output import positive_scores

        try:
            # The answer is the logged pyfunc's output (class probabilities for a
            # classifier); smoke tests compare one score per row.
            preds = positive_scores(resp.json()["predictions"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DeployTargetError(f"smoke on {track}: bad answer {resp.text[:300]}") from exc
        return check_scores(preds, len(rows), f"version {ref.version} on {track} (HTTP)")

    def describe(self) -> dict[str, Any]:
        state = self.read_state()
        return {
            "kind": self.kind,
            "model_name": self.model_name,
            "state_path": str(self.state_path),
            "server": self.server_address(),
            "revision": state.revision,
            "serving": state.serving_versions(),
            "weights": state.weights(),
        }
