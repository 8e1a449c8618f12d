"""Following the deployment state: hot swap under load, canary routing, shadow, smoke."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import numpy as np
from serving_support import MODEL, deploy, read_log, split_body


class Load:
    """A few client threads sending single-row requests until stopped; records every answer."""

    def __init__(self, url: str, body: dict, threads: int = 3):
        self.url, self.body = url, body
        self.statuses: Counter[int] = Counter()
        self.versions: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    r = client.post("/invocations", json=self.body)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.statuses[r.status_code] += 1
                if r.status_code == 200:
                    self.versions.append(r.headers["X-Model-Version"])
                else:
                    self.failures.append(r.text)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def _wait_served(client: httpx.Client, revision: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = client.get("/deployment").json()
        if doc["served_revision"] == revision:
            return doc
        time.sleep(0.05)
    raise AssertionError(f"revision {revision} not served: {doc}")


def test_hot_swap_and_rollback_under_load_drop_nothing(home, registry, start_server):
    deploy(home, stable="1")
    srv = start_server()
    srv.wait_ready()
    body = split_body(registry.features, registry.rows.iloc[:1])
    with httpx.Client(base_url=srv.url, timeout=10) as client, Load(srv.url, body) as load:
        time.sleep(0.3)
        v1 = srv.model_server.deployment.snapshot.stable
        state = deploy(home, stable="2", previous="1")  # blue-green switch
        doc = _wait_served(client, state.revision)
        assert doc["loaded"]["stable"]["version"] == "2"
        assert doc["loaded"]["previous"]["version"] == "1"
        # v1 stays loaded as previous: the same object, so rollback needs no load.
        assert srv.model_server.deployment.snapshot.tracks["previous"] is v1
        time.sleep(0.3)
        state = deploy(home, stable="1", previous=None)  # rollback
        _wait_served(client, state.revision)
        time.sleep(0.3)
        state = deploy(home, stable="3")  # replace: v1 is retired
        _wait_served(client, state.revision)
        time.sleep(0.3)
    assert not load.failures, load.failures[:3]
    assert set(load.statuses) == {200} and load.statuses[200] > 20
    seq = [v for i, v in enumerate(load.versions) if i == 0 or load.versions[i - 1] != v]
    assert seq[0] == "1" and seq[-1] == "3" and "2" in seq
    deadline = time.monotonic() + 5
    while v1.predictor is not None and time.monotonic() < deadline:  # released after drain
        time.sleep(0.02)
    assert v1.predictor is None and v1.inflight == 0


def test_bad_new_state_keeps_serving_the_old_one(home, registry, start_server):
    deploy(home, stable="1")
    srv = start_server()
    srv.wait_ready()
    from mlcicd_dagster.rollout.state import ModelRef, transition

    state = transition(
        home.deployment_state(MODEL),
        MODEL,
        "bad",
        lambda s: {"stable": ModelRef("99", f"models:/{MODEL}/99")},
    )
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        deadline = time.monotonic() + 30
        while client.get("/deployment").json()["load_error"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        doc = client.get("/deployment").json()
        assert doc["revision"] == state.revision and doc["served_revision"] == state.revision - 1
        assert "99" in doc["load_error"]
        r = client.post("/invocations", json=split_body(registry.features, registry.rows[:1]))
        assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"


def test_canary_weight_and_sticky_routing(home, registry, start_server):
    deploy(home, stable="1", canary=("2", 0.3))
    srv = start_server()
    srv.wait_ready()
    body = split_body(registry.features, registry.rows.iloc[:1])
    keys = [f"user-{i}" for i in range(300)]

    def tracks_for(client):
        out = {}
        for k in keys:
            r = client.post("/invocations", json=body, headers={"X-Routing-Key": k})
            assert r.status_code == 200
            out[k] = (r.headers["X-Track"], r.headers["X-Model-Version"])
        return out

    with httpx.Client(base_url=srv.url, timeout=10) as client:
        first = tracks_for(client)
        share = sum(t == "canary" for t, _ in first.values()) / len(keys)
        # Binomial(300, 0.3): sd 0.026; +-0.1 is ~4 sd.
        assert 0.2 <= share <= 0.4, share
        assert all(v == ("2" if t == "canary" else "1") for t, v in first.values())
        assert tracks_for(client) == first  # sticky: same key, same track
        # Without a routing key each request routes by its own id: both tracks answer.
        seen = {client.post("/invocations", json=body).headers["X-Track"] for _ in range(60)}
        assert seen == {"stable", "canary"}
        state = deploy(home, canary=("2", 0.6))
        _wait_served(client, state.revision)
        second = tracks_for(client)
    # Raising the weight only moves keys onto the canary, never off it.
    assert all(second[k][0] == "canary" for k, (t, _) in first.items() if t == "canary")
    share2 = sum(t == "canary" for t, _ in second.values()) / len(keys)
    assert 0.5 <= share2 <= 0.7, share2


def test_shadow_is_logged_never_returned_and_x_track_smoke(
    home, registry, start_server, local_predictors
):
    deploy(home, stable="1", shadow=("3", 1.0), previous="2")
    srv = start_server()
    srv.wait_ready()
    feats = registry.features
    rows = registry.rows.iloc[:5]
    answered: dict[str, float] = {}
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        for i in range(len(rows)):
            r = client.post("/invocations", json=split_body(feats, rows.iloc[i : i + 1]))
            assert r.headers["X-Model-Version"] == "1" and r.headers["X-Track"] == "stable"
            answered[r.headers["X-Request-Id"]] = r.json()["predictions"][0][1]
        # Smoke tests can score on exactly one track, shadow and previous included.
        for track, version in (("shadow", "3"), ("previous", "2"), ("stable", "1")):
            r = client.post(
                "/invocations", json=split_body(feats, rows), headers={"X-Track": track}
            )
            assert r.status_code == 200 and r.headers["X-Model-Version"] == version
            expected = local_predictors[version].predict_proba(rows[feats])
            np.testing.assert_allclose(
                np.asarray(r.json()["predictions"])[:, 1], expected, rtol=1e-9
            )
        r = client.post("/invocations", json=split_body(feats, rows), headers={"X-Track": "canary"})
        assert r.status_code == 404 and "no model on track" in r.json()["message"]
        r = client.post("/invocations", json=split_body(feats, rows), headers={"X-Track": "blue"})
        assert r.status_code == 400
    np.testing.assert_allclose(
        list(answered.values()), local_predictors["1"].predict_proba(rows[feats]), rtol=1e-9
    )
    srv.stop()
    log = read_log(home.predictions(MODEL))
    served = log[log["track"] == "stable"]
    shadow = log[log["track"] == "shadow"]
    assert sorted(served["request_id"]) == sorted(answered)  # smoke traffic is not logged
    assert sorted(shadow["request_id"]) == sorted(answered)  # same ids, mirrored
    assert set(shadow["model_version"]) == {"3"} and set(served["model_version"]) == {"1"}
    by_id = shadow.set_index("request_id").loc[list(answered)]
    np.testing.assert_allclose(
        by_id["prediction"], local_predictors["3"].predict_proba(rows[feats]), rtol=1e-9
    )
