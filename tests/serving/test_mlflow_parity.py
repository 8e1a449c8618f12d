"""``mlcicd serve`` as a drop-in for ``mlflow models serve``, on the same registered version.

MLflow's own scoring-server test cases (mlflow/mlflow tests/pyfunc/test_scoring_server.py:
malformed JSON, non-dict bodies, unknown and several formats, wrong orientations, invalid
frames, empty CSV, charset and unknown content-type parameters, unsupported types,
positional ``instances``) plus the input rules where the two servers used to differ
(numeric strings, NaN tokens, booleans, nulls, extra keys, CSV bodies, ``params``...) are
sent to both servers: a real ``mlflow models serve --env-manager local`` subprocess and ours.
They run for every task, on models the project's own trainers and tracking code log: the
binary scikit-learn classifier, a multiclass torch CNN (the shipped digits pipeline's
module: a tensor signature), a regression model (the shipped diabetes pipeline's trainer
and data) and a classifier with text categorical features (an OrdinalEncoder pipeline).
One MLflow server and one of ours per model, for all its cases.
Status codes, error bodies (``error_code`` and ``message``) and predictions must agree;
the few deliberate differences are asserted as such in ``test_documented_differences``
(docs/serving.md lists them).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_support import MODEL, deploy

VERSION = "1"
JSON = "application/json"
VENV_BIN = str(Path(sys.executable).parent)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_serve(tracking_uri: str, model_uris: list[str], logs: Path) -> Iterator[list[str]]:
    """``mlflow models serve`` on each of ``model_uris``, started together (the venv's bin
    first on PATH, local env); their URLs."""
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    procs: list[tuple[subprocess.Popen[bytes], str, Path]] = []
    try:
        for i, uri in enumerate(model_uris):
            port = _free_port()
            cmd = [f"{VENV_BIN}/mlflow", "models", "serve", "-m", uri]
            cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
            log = logs / f"serve-{i}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
            procs.append((proc, f"http://127.0.0.1:{port}", log))
        deadline = time.monotonic() + 300
        for proc, url, log in procs:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"mlflow models serve exited: {log.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow models serve did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)
        yield [url for _, url, _ in procs]
    finally:
        for proc, _, _ in procs:
            proc.terminate()
        for proc, _, _ in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def mlflow_server(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow models serve`` on the binary model's version 1."""
    logs = tmp_path_factory.mktemp("mlflow-serve")
    with mlflow_serve(registry.tracking_uri, [f"models:/{MODEL}/{VERSION}"], logs) as urls:
        yield urls[0]


@pytest.fixture
def ours(home: Any, start_server: Any) -> str:
    deploy(home, stable=VERSION)
    srv = start_server()
    srv.wait_ready()
    return str(srv.url)


def _rows(registry: Any, n: int = 3) -> Any:
    """Rows as a landed batch has them: integer columns int64, the others float64."""
    import pandas as pd
    from serving_support import DATA

    pool = pd.read_csv(DATA / "pool.csv.gz")
    return pool[registry.features].iloc[3000 : 3000 + n].reset_index(drop=True)


@dataclass(frozen=True)
class Served:
    """One model served by both: ``mlflow models serve`` and ours, on the same version."""

    kind: str
    mlflow: str  # URL
    ours: str  # URL
    frame: pd.DataFrame  # rows as a landed batch has them (int64 / float64 / text)
    integer: str | None  # an integer column, a double one, a text one (None: no such)
    double: str
    text: str | None
    atol: float  # torch scores in float32: a batch of 1 and of 2 differ in the last bits
    name: str = MODEL  # the registered model's name
    log_dir: Path | None = None  # our server's prediction log


def cases(model: Served) -> list[tuple[str, str | None, bytes]]:
    """(name, Content-Type, body): MLflow's test cases on the model, and the former gaps."""
    frame = model.frame
    feats = list(frame.columns)
    first, dbl = feats[0], model.double
    split = json.loads(frame.to_json(orient="split", index=False))
    records = json.loads(frame.to_json(orient="records"))
    one = records[0]

    def body(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def rec(**change: Any) -> bytes:
        return body({"dataframe_records": [{**one, **change}]})

    out: list[tuple[str, str | None, bytes]] = [
        # -- MLflow's scoring-server tests, on this model ---------------------------------
        ("malformed json", JSON, b"this is,,,, not valid json"),
        ("json number", JSON, b"1"),
        ("json string", JSON, b'"1"'),
        ("json list", JSON, b"[1]"),
        ("not a dataframe", JSON, body({"not": "a serialized dataframe"})),
        ("two formats", JSON, body({"dataframe_records": [], "dataframe_split": {"data": []}})),
        ("records given split", JSON, body({"dataframe_records": frame.to_dict("split")})),
        ("split given records", JSON, body({"dataframe_split": records})),
        (
            "split bad index",
            JSON,
            body({"dataframe_split": {"index": [1, 2], "data": [[1], [2], [3]]}}),
        ),  # noqa: E501
        (
            "positional frame",
            JSON,
            body({"dataframe_split": {"data": [[float(i)] for i in range(10)]}}),
        ),  # noqa: E501
        ("empty csv", "text/csv", b""),
        ("records", JSON, body({"dataframe_records": records})),
        ("records charset UTF-8", JSON + "; charset=UTF-8", body({"dataframe_records": records})),
        ("split", JSON, body({"dataframe_split": split})),
        ("split charset UTF-8", JSON + "; charset=UTF-8", body({"dataframe_split": split})),
        (
            "unsupported content type",
            "not_a_supported_content_type",
            body({"dataframe_split": split}),
        ),  # noqa: E501
        ("unknown content param", JSON + "; something=something", body({"dataframe_split": split})),  # noqa: E501
        ("instances as rows", JSON, body({"instances": split["data"]})),
        # -- the other formats and the rules that used to differ --------------------------
        ("split with index", JSON, body({"dataframe_split": {**split, "index": [7, 8, 9]}})),
        (
            "split extra column",
            JSON,
            body(
                {
                    "dataframe_split": {
                        "columns": [*feats, "x"],
                        "data": [[*r, 1] for r in split["data"]],
                    }
                }
            ),
        ),  # noqa: E501
        (
            "split columns reordered",
            JSON,
            body(
                {
                    "dataframe_split": {
                        "columns": feats[::-1],
                        "data": [r[::-1] for r in split["data"]],
                    }
                }
            ),
        ),  # noqa: E501
        (
            "split missing column",
            JSON,
            body(
                {"dataframe_split": {"columns": feats[1:], "data": [r[1:] for r in split["data"]]}}
            ),
        ),  # noqa: E501
        (
            "split ragged",
            JSON,
            body({"dataframe_split": {"columns": feats, "data": [split["data"][0][:-1]]}}),
        ),  # noqa: E501
        ("split extra key", JSON, body({"dataframe_split": {**split, "extra": 1}})),
        ("instances records", JSON, body({"instances": records})),
        ("inputs columns", JSON, body({"inputs": {c: frame[c].tolist() for c in feats}})),
        ("inputs one record", JSON, body({"inputs": one})),
        ("inputs records", JSON, body({"inputs": records})),
        (
            "inputs ragged columns",
            JSON,
            body({"inputs": {**{c: frame[c].tolist() for c in feats}, first: [30]}}),
        ),  # noqa: E501
        ("extra top-level key", JSON, body({"dataframe_records": records, "foo": 1})),
        ("params", JSON, body({"dataframe_records": records, "params": {"threshold": 0.3}})),
        ("instances and inputs", JSON, body({"instances": records, "inputs": records})),
        ("empty records", JSON, body({"dataframe_records": []})),
        ("empty object", JSON, b"{}"),
        ("record extra key", JSON, rec(extra="x")),
        (
            "record missing key",
            JSON,
            body({"dataframe_records": [{k: v for k, v in one.items() if k != first}]}),
        ),  # noqa: E501
        ("double column integer", JSON, rec(**{dbl: 90})),
        ("double column numeric string", JSON, rec(**{dbl: "90"})),
        ("double column null", JSON, rec(**{dbl: None})),
        ("double column nested", JSON, rec(**{dbl: [1, 2]})),
        ("double column text", JSON, rec(**{dbl: "abc"})),
        ("NaN token", JSON, rec(**{dbl: math.nan})),
        ("Infinity token", JSON, rec(**{dbl: math.inf})),
        ("csv", "text/csv", frame.to_csv(index=False).encode()),
        ("csv charset", "text/csv; charset=utf-8", frame.to_csv(index=False).encode()),
        ("csv malformed", "text/csv", b'a,b\n1,"2\n'),
        ("charset latin-1", JSON + "; charset=latin-1", body({"dataframe_split": split})),
        ("prefix content type", "application/jsonx", body({"dataframe_split": split})),
        ("capitalised content type", "Application/JSON", body({"dataframe_split": split})),
        ("not utf-8", JSON, b'{"dataframe_records": [{"A": "\xff"}]}'),
        ("utf-16 json", JSON, json.dumps({"dataframe_records": records}).encode("utf-16")),
    ]
    if model.integer is not None:
        age = model.integer
        out += [
            ("integer column as float", JSON, rec(**{age: 35.0})),
            ("integer column fractional", JSON, rec(**{age: 35.5})),
            ("integer column numeric string", JSON, rec(**{age: "35"})),
            ("integer column text", JSON, rec(**{age: "old"})),
            ("integer column null", JSON, rec(**{age: None})),
            ("integer column boolean", JSON, rec(**{age: True})),
            ("integer column huge", JSON, rec(**{age: 2**70})),
        ]
    if model.text is not None:
        txt = model.text
        texts = frame[txt].tolist()
        out += [
            ("text column split", JSON, body({"dataframe_split": split})),
            ("text column unknown category", JSON, rec(**{txt: "a category never seen"})),
            ("text column number", JSON, rec(**{txt: 3})),
            ("text column float", JSON, rec(**{txt: 2.5})),
            ("text column numeric string", JSON, rec(**{txt: "3"})),
            ("text column null", JSON, rec(**{txt: None})),
            ("text column boolean", JSON, rec(**{txt: True})),
            ("text column empty string", JSON, rec(**{txt: ""})),
            ("text column non-ascii", JSON, rec(**{txt: "Universit\u00e4t"})),
            ("text inputs columns", JSON, body({"inputs": {c: frame[c].tolist() for c in feats}})),
            (
                "text column all one value",
                JSON,
                body(
                    {
                        "inputs": {
                            **{c: frame[c].tolist() for c in feats},
                            txt: [texts[0]] * len(texts),
                        }
                    }
                ),
            ),  # noqa: E501
        ]
    if model.kind == "multiclass_torch":  # a tensor signature: MLflow takes columns by position
        rows = frame.to_numpy().tolist()
        out += [
            ("tensor inputs rows", JSON, body({"inputs": rows})),
            ("tensor instances rows", JSON, body({"instances": rows})),
            (
                "tensor inputs rows of ints",
                JSON,
                body({"inputs": [[int(v) for v in r] for r in rows]}),
            ),  # noqa: E501
            ("tensor inputs one short row", JSON, body({"inputs": [rows[0][:-1]]})),
            (
                "tensor records reordered keys",
                JSON,
                body({"dataframe_records": [dict(reversed(list(r.items()))) for r in records]}),
            ),  # noqa: E501
            (
                "tensor one row",
                JSON,
                body({"dataframe_split": {"columns": feats, "data": rows[:1]}}),
            ),  # noqa: E501
        ]
    return out


def _send(client: httpx.Client, url: str, ctype: str | None, data: bytes) -> httpx.Response:
    headers = {"Content-Type": ctype} if ctype is not None else {}
    return client.post(f"{url}/invocations", content=data, headers=headers)


_SET = re.compile(r"\{'\w+'(?:, '\w+')*\}")


def _canonical(message: Any) -> Any:
    """MLflow prints sets of names (its formats, a body's keys) in hash order, which
    differs from process to process: compare them sorted."""
    if not isinstance(message, str):
        return message
    return _SET.sub(lambda m: "{" + ", ".join(sorted(m.group()[1:-1].split(", "))) + "}", message)


def _error(r: httpx.Response) -> Any:
    """What an error answer says: (error_code, message) of a JSON error, else the text."""
    try:
        doc = r.json()
    except ValueError:
        return ("text", _canonical(r.text))
    if isinstance(doc, dict) and "error_code" in doc:
        return (doc["error_code"], _canonical(doc.get("message")), "stack_trace" in doc)
    return ("json", doc)


KINDS = ("binary", "multiclass_torch", "regression_text")
TRAINED = KINDS[1:]
REFUSED_NON_FINITE = {
    ("multiclass_torch", case) for case in ("double column null", "NaN token", "Infinity token")
}
ROOT = Path(__file__).resolve().parents[2]
EDUCATION = {1: "graduate school", 2: "university", 3: "high school"}


def _train(kind: str, uri: str) -> tuple[str, pd.DataFrame, tuple[str | None, str, str | None]]:
    """(model name, three rows as they land, (integer, double, text) column) of a model the
    project's trainers and tracking code log, as the shipped pipelines configure them: the
    digits CNN (multiclass, a tensor signature) and the diabetes regression, its ``sex``
    column as text (the scikit-learn trainer's OrdinalEncoder pipeline)."""
    from mlcicd_dagster.models.tasks import make_task
    from mlcicd_dagster.models.tracking import train_and_track
    from mlcicd_dagster.models.trainers import make_trainer

    if str(ROOT) not in sys.path:  # the digits pipeline's module: assets.digits.model
        sys.path.insert(0, str(ROOT))
    columns: tuple[str | None, str, str | None]
    if kind == "multiclass_torch":  # assets/digits: the pipeline's own CNN (fewer epochs)
        name, label = "digits", "digit"
        pool = pd.read_csv(ROOT / "assets/digits/data/pool.csv.gz")
        task = make_task("multiclass", list(range(10)))
        trainer = make_trainer(
            "torch", {"max_epochs": 1, "batch_size": 64}, task=task,
            factory="assets.digits.model:small_cnn", model_params={"channels": 4},
        )  # fmt: skip
        columns = (None, "pixel_3_3", None)
    else:  # assets/diabetes: its trainer settings; sex as text (an OrdinalEncoder pipeline)
        name, label = "diabetes", "progression"
        pool = pd.read_csv(ROOT / "assets/diabetes/data/pool.csv.gz")
        pool["sex"] = pool["sex"].map({1: "female", 2: "male"})
        task = make_task("regression")
        params = {"max_iter": 60, "learning_rate": 0.05, "min_samples_leaf": 10}
        trainer = make_trainer("sklearn", {**params, "early_stopping": False}, task=task)
        columns = (None, "bmi", "sex")
    feats = [c for c in pool.columns if c != label and not c.endswith("_id") and c != "ID"]
    train, holdout = pool.iloc[: len(pool) * 3 // 4], pool.iloc[len(pool) * 3 // 4 :]
    tracked = train_and_track(
        trainer, train, holdout, label=label, tracking_uri=uri, model_name=name,
        features=feats, threads=1,
    )  # fmt: skip
    assert tracked.registered.version == VERSION
    return name, holdout[feats].head(3).reset_index(drop=True), columns


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The multiclass and regression models in one store, each under ``mlflow models serve``
    (started together): kind -> (tracking URI, model name, rows, columns, MLflow URL)."""
    import mlflow

    root = tmp_path_factory.mktemp("parity-tasks")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous_uri = mlflow.get_tracking_uri()
    try:
        models = {kind: _train(kind, uri) for kind in TRAINED}
    finally:
        mlflow.set_tracking_uri(previous_uri)
    uris = [f"models:/{name}/{VERSION}" for name, _, _ in models.values()]
    with mlflow_serve(uri, uris, root) as urls:
        yield {kind: (uri, *models[kind], url) for kind, url in zip(TRAINED, urls, strict=True)}


@pytest.fixture(scope="module", params=KINDS)
def served(
    request: pytest.FixtureRequest, registry: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """Both servers on version 1 of one model, for all of that model's cases."""
    import mlflow
    from serving_support import FAST

    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.rollout.state import ModelRef, transition
    from mlcicd_dagster.serving import ServerConfig, ServerThread

    kind = request.param
    root = tmp_path_factory.mktemp(f"parity-{kind}")
    previous_uri = mlflow.get_tracking_uri()
    if kind == "binary":
        uri, name, frame = registry.tracking_uri, MODEL, _rows(registry)
        columns: tuple[str | None, str, str | None] = ("AGE", "LIMIT_BAL", None)
        mlflow_url = request.getfixturevalue("mlflow_server")
    else:
        uri, name, frame, columns, mlflow_url = request.getfixturevalue("trained")[kind]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLCICD_HOME", str(root / "home"))
        home = Home(root / "home").ensure()
        transition(
            home.deployment_state(name), name, "test",
            lambda _: {"stable": ModelRef(VERSION, f"models:/{name}/{VERSION}", weight=1.0)},
        )  # fmt: skip
        srv = ServerThread(home, name, "127.0.0.1", 0, ServerConfig(**FAST)).start()
        try:
            srv.wait_ready()
            atol = 1e-6 if kind == "multiclass_torch" else 1e-15
            yield Served(
                kind, mlflow_url, str(srv.url), frame, *columns, atol, name,
                home.predictions(name),
            )  # fmt: skip
        finally:
            srv.stop()
            mlflow.set_tracking_uri(previous_uri)


def test_every_request_case_answers_as_mlflow_models_serve(served: Served) -> None:
    different: list[Any] = []
    with httpx.Client(timeout=60) as client:
        for name, ctype, data in cases(served):
            theirs = _send(client, served.mlflow, ctype, data)
            mine = _send(client, served.ours, ctype, data)
            # Every answer of ours carries request ids (one per row) and the version.
            assert mine.headers.get("X-Request-Id"), name
            assert mine.headers.get("X-Model-Version") == VERSION, name
            if (served.kind, name) in REFUSED_NON_FINITE:
                # docs/serving.md: a torch model cannot take NaN; MLflow answers NaN scores
                assert theirs.status_code == 200, name
                doc = mine.json()
                assert mine.status_code == 400 and doc["error_code"] == "BAD_REQUEST", name
                assert f"feature column(s): {served.double}" in doc["message"], name
                continue
            if theirs.status_code != mine.status_code:
                different.append((name, theirs.status_code, mine.status_code, mine.text[:200]))
                continue
            if theirs.status_code == 200:
                want = theirs.json()["predictions"]
                got = mine.json()["predictions"]
                assert np.shape(got) == np.shape(want), name
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=served.atol, err_msg=name)
                ids = mine.headers["X-Request-Id"].split(",")
                assert len(ids) == len(got) == len(set(ids)), name
            else:
                assert mine.headers["content-type"].split(";")[0] == JSON, name
                want, got = _error(theirs), _error(mine)
                if want[0] == "text":  # MLflow's plain-text 415: the same text, as JSON
                    want = ("BAD_REQUEST", want[1], False)
                if want != got:
                    different.append((name, want, got))
    assert not different, f"{served.kind}:\n" + "\n".join(map(str, different))


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_answers_as_invocations_for_every_task(served: Served, binary: bool) -> None:
    """tritonclient, one tensor per feature (``BYTES`` for a text feature, JSON or binary
    tensor data): the same answer as ``/invocations`` (and so as ``mlflow models serve``)."""
    import tritonclient.http as triton

    frame = served.frame
    host_port = served.ours.removeprefix("http://")
    client = triton.InferenceServerClient(url=host_port)
    name = served.name
    meta = client.get_model_metadata(name)
    types = {i["name"]: i["datatype"] for i in meta["inputs"]}
    inputs = []
    for col in frame.columns:
        values = frame[col].to_numpy()
        if values.dtype == object:
            assert types[col] == "BYTES", col
            values = values.astype(np.object_)
            dtype = "BYTES"
        else:
            dtype = "INT64" if values.dtype.kind == "i" else "FP64"
        tensor = triton.InferInput(col, [len(values)], dtype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    result = client.infer(name, inputs)
    got = result.as_numpy("predictions")
    split = json.loads(frame.to_json(orient="split", index=False))
    want = httpx.post(f"{served.ours}/invocations", json={"dataframe_split": split}).json()
    np.testing.assert_allclose(got, want["predictions"], rtol=1e-12, atol=served.atol)
    if served.text is not None:  # a number where the text feature goes: refused, named
        bad = [t for t in inputs if t.name() != served.text]
        wrong = triton.InferInput(served.text, [len(frame)], "FP64")
        wrong.set_data_from_numpy(np.zeros(len(frame)), binary_data=binary)
        with pytest.raises(Exception, match=f"{served.text}.*BYTES"):
            client.infer(name, [*bad, wrong])


def test_text_features_are_scored_and_logged_as_text(served: Served) -> None:
    """A text feature reaches the model as text and the prediction log as a text column."""
    from serving_support import read_log

    if served.text is None:
        pytest.skip(f"the {served.kind} model has no text feature")
    rows = json.loads(served.frame.to_json(orient="records"))
    marker = "a category never seen"
    r = httpx.post(
        f"{served.ours}/invocations",
        json={"dataframe_records": [{**rows[0], served.text: marker}, rows[1]]},
    )
    assert r.status_code == 200, r.text
    ids = r.headers["X-Request-Id"].split(",")
    assert served.log_dir is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log = read_log(served.log_dir)
        if not log.empty and set(ids) <= set(log["request_id"]):
            break
        time.sleep(0.2)
    logged = log.set_index("request_id").loc[ids, served.text].tolist()
    assert logged == [marker, rows[1][served.text]]
    assert log[served.double].dtype == np.float64


def test_a_classifier_answers_class_probabilities(ours: str, registry: Any) -> None:
    """What the logged pyfunc returns: ``[[P(0), P(1)], ...]``; column 1 is P(positive)."""
    from mlcicd_dagster.models.loading import load_predictor

    frame = _rows(registry, 5)
    r = httpx.post(
        f"{ours}/invocations",
        json={"dataframe_split": json.loads(frame.to_json(orient="split", index=False))},
    )
    assert r.status_code == 200, r.text
    preds = np.asarray(r.json()["predictions"])
    assert preds.shape == (5, 2)
    np.testing.assert_allclose(preds.sum(axis=1), 1.0, rtol=1e-12)
    local = load_predictor(f"models:/{MODEL}/{VERSION}", tracking_uri=registry.tracking_uri)
    np.testing.assert_allclose(preds[:, 1], local.predict_proba(frame), rtol=1e-12)


def test_ping_version_health_as_mlflow(mlflow_server: str, ours: str) -> None:
    for route in ("/ping", "/version", "/health"):
        theirs, mine = httpx.get(mlflow_server + route), httpx.get(ours + route)
        assert theirs.status_code == mine.status_code == 200, route
        if route != "/health":  # ours is a JSON liveness document (docs/serving.md)
            assert mine.text == theirs.text, route


def test_ping_is_503_until_a_model_is_loaded(home: Any, start_server: Any) -> None:
    srv = start_server()
    assert httpx.get(f"{srv.url}/ping").status_code == 503
    assert httpx.get(f"{srv.url}/health").status_code == 200  # liveness: the process is up
    r = httpx.post(f"{srv.url}/invocations", json={"inputs": {"AGE": [1]}})
    assert r.status_code == 503 and r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert r.headers["X-Request-Id"]
    deploy(home, stable=VERSION)
    srv.wait_ready()
    assert httpx.get(f"{srv.url}/ping").status_code == 200


def test_documented_differences(mlflow_server: str, ours: str, registry: Any) -> None:
    """The deliberate differences of docs/serving.md, each shown on both servers."""
    frame = _rows(registry)
    body = json.dumps(
        {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    ).encode()
    with httpx.Client(timeout=60) as client:
        # 1. No Content-Type: MLflow fails with a 500; ours reads JSON.
        assert _send(client, mlflow_server, None, body).status_code == 500
        assert _send(client, ours, None, body).status_code == 200
        # 2. A row limit (10,000 by default): 413 with MLflow's error document.
        many = {"inputs": {c: [float(frame[c][0])] * 10_001 for c in registry.features}}
        r = client.post(f"{ours}/invocations", json=many)
        assert r.status_code == 413 and r.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        assert client.post(f"{mlflow_server}/invocations", json=many).status_code == 200
        # 3. JSON nested beyond the parser's depth: MLflow's json.loads overflows (500).
        deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        assert _send(client, mlflow_server, JSON, deep).status_code == 500
        r = _send(client, ours, JSON, deep)
        assert r.status_code == 400 and "nested too deeply" in r.json()["message"]


def test_pyfunc_takes_a_landed_batch_as_is(registry: Any) -> None:
    """The signature says what the data gate passes: integer columns stay integers."""
    import mlflow
    import pandas as pd
    from serving_support import DATA

    batch = pd.read_csv(DATA / "golden.csv.gz")  # a batch as it lands: int64 and float64
    assert (batch["AGE"].dtype, batch["LIMIT_BAL"].dtype) == (np.int64, np.float64)
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)  # our loaders set it: other fixtures' store
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{VERSION}")
    out = np.asarray(model.predict(batch.drop(columns=[c for c in ("ID",) if c in batch])))
    assert out.shape == (len(batch), 2)
    schema = model.metadata.get_input_schema()
    types = {c.name: c.type.name for c in schema.inputs}
    assert types["AGE"] == "long" and types["LIMIT_BAL"] == "double"


def _pyfunc_and_ours(uri: str, name: str, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A raw frame scored by MLflow's pyfunc and by the predictor our server loads."""
    import mlflow

    from mlcicd_dagster.models.loading import load_predictor

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{VERSION}")
        schema = model.metadata.get_input_schema()
        assert schema.is_tensor_spec() and schema.inputs[0].type == np.dtype(np.float64)
        theirs = np.asarray(model.predict(frame), np.float64)
        mine = load_predictor(f"models:/{name}/{VERSION}", tracking_uri=uri).predict(frame)
    finally:
        mlflow.set_tracking_uri(previous)
    return theirs, np.asarray(mine, np.float64)


def test_pyfunc_takes_a_landed_torch_batch_as_is(trained: dict[str, Any], tmp_path: Path) -> None:
    """A torch model's logged graph takes float64 and casts to float32 inside: the raw frame
    of a landed batch (the data gate's int64 and float64 columns, id and label dropped)
    goes through ``mlflow.pyfunc.load_model(...).predict`` and scores as our server does."""
    from serving_support import DATA, LABEL

    from mlcicd_dagster.models.tasks import make_task
    from mlcicd_dagster.models.tracking import train_and_track
    from mlcicd_dagster.models.trainers import make_trainer

    # the digits CNN (multiclass): its rows as they land, float64 pixels
    uri, name, frame, _, _ = trained["multiclass_torch"]
    theirs, mine = _pyfunc_and_ours(uri, name, frame)
    assert theirs.shape == (len(frame), 10)
    np.testing.assert_array_equal(theirs, mine)

    # the built-in torch MLP (binary) on credit data: integer columns stay integers
    batch = pd.read_csv(DATA / "golden.csv.gz").head(300)
    assert (batch["AGE"].dtype, batch["LIMIT_BAL"].dtype) == (np.int64, np.float64)
    feats = [c for c in batch.columns if c not in ("ID", LABEL)]
    trainer = make_trainer(
        "torch", {"max_epochs": 1, "batch_size": 64}, task=make_task("binary", [0, 1])
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracked = train_and_track(
        trainer, batch.iloc[:200], batch.iloc[200:], label=LABEL, tracking_uri=uri,
        model_name="credit_torch", features=feats, threads=1,
    )  # fmt: skip
    assert tracked.registered.version == VERSION
    raw = batch.iloc[200:].drop(columns=["ID", LABEL])
    theirs, mine = _pyfunc_and_ours(uri, "credit_torch", raw)
    assert theirs.shape == mine.shape == (len(raw),)
    np.testing.assert_array_equal(theirs, mine)
