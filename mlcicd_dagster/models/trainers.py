"""Trainers: one interface, a default per task, and the user's own model.

Every trainer is made for a task (``models.tasks``: binary, multiclass, regression)
and fits on *encoded* labels (class index in the declared order, or the number), so
the model's outputs are always in the task's order.

* ``SklearnTrainer`` (the default): HistGradientBoosting (classifier or regressor by
  task). Seconds on tens of thousands of rows, handles heavy-tailed amounts without
  scaling and missing values natively, takes monotonic constraints ("more payment
  delay never lowers the risk" is guaranteed by construction). Text categorical
  features go through an ``OrdinalEncoder`` (unknown and missing categories become
  missing, which the trees route on their own) in one ``Pipeline``.
* ``TorchTabularTrainer``: an MLP (or the user's module), with the task's head and
  loss: sigmoid + binary cross-entropy, softmax + cross-entropy, identity + squared
  error on a standardised target. Uses a GPU when present (mixed precision there),
  the CPU otherwise; seeded; stops early on a validation split. Its preprocessing
  lives inside the module, so the exported graph needs no training code.
* ``EstimatorTrainer``: the user's scikit-learn estimator or Pipeline, from a factory.

A *factory* is a dotted path (``package.module:function`` or ``package.module.function``)
to a callable returning an unfitted scikit-learn estimator/Pipeline or a
``torch.nn.Module``. It is called with those of ``n_features``, ``n_outputs``,
``feature_names``, ``task``, ``seed`` that it names as parameters, plus the pipeline's
``model_params``. A torch module maps float32 ``(n, n_features)`` to
*raw scores*, ``(n, n_outputs)`` (or ``(n,)`` for one output); the trainer adds the
task's head (sigmoid, softmax, or the target's scale) and loss.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlcicd_dagster.models.predictor import Predictor
from mlcicd_dagster.models.tasks import BinaryTask, Task, TaskError

MIN_TRAIN_ROWS = 50
"""Fewer training rows than this cannot make a model worth judging."""


@dataclass
class TrainedModel:
    model: Any  # sklearn estimator or torch.nn.Module (CPU, eval mode)
    predictor: Predictor
    feature_names: list[str]
    params: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0
    task: Task = field(default_factory=BinaryTask)
    string_features: list[str] = field(default_factory=list)
    allow_missing: bool = False


class Trainer(Protocol):
    """Fits a model for ``task``; ``predictor.predict`` is the task's output."""

    name: str
    task: Task

    def params(self) -> dict[str, Any]: ...

    def fit(
        self, X: pd.DataFrame, y: Any, *, seed: int = 0, threads: int | None = None
    ) -> TrainedModel:
        """``y``: raw labels (encoded by the task). ``threads``: CPU threads the fit may
        use (None: the library's default, every core)."""
        ...


def check_training_data(X: pd.DataFrame, y: Any, task: Task) -> np.ndarray:
    """Encoded labels, or a ``TaskError`` saying why this data cannot make a model."""
    y_raw = y.tolist() if isinstance(y, pd.Series) else list(np.asarray(y, dtype=object))
    if len(X) != len(y_raw):
        raise TaskError(f"{len(X)} feature rows but {len(y_raw)} labels")
    if len(X) < MIN_TRAIN_ROWS:
        raise TaskError(f"too few training rows ({len(X)}): at least {MIN_TRAIN_ROWS} are needed")
    encoded = task.encode(y_raw)
    task.check_trainable(encoded)
    return encoded


def _frame_mode(X: pd.DataFrame, names: Sequence[str]) -> tuple[list[str], bool]:
    from mlcicd_dagster.models.loading import string_columns

    strings = string_columns(X, names)
    numeric = [n for n in names if n not in strings]
    missing = bool(X[numeric].isna().to_numpy().any()) if numeric else False
    return strings, missing or bool(strings and X[strings].isna().to_numpy().any())


class SklearnTrainer:
    name = "sklearn_hgb"
    # HistGradientBoosting parallelises with OpenMP; ``threads`` caps it (platform.cpu).

    def __init__(
        self,
        *,
        task: Task | None = None,
        max_iter: int = 300,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 40,
        l2_regularization: float = 1.0,
        monotonic_increase: Sequence[str] = (),
        monotonic_decrease: Sequence[str] = (),
        early_stopping: bool = True,
    ):
        # early_stopping=False fixes the model's size at max_iter trees: its serving cost
        # then stays the same as the data grows (the serving-budget gate compares against
        # the champion's), instead of growing with every retrain.
        self.task = task or BinaryTask()
        self._params: dict[str, Any] = {
            "max_iter": max_iter,
            "learning_rate": learning_rate,
            "max_leaf_nodes": max_leaf_nodes,
            "min_samples_leaf": min_samples_leaf,
            "l2_regularization": l2_regularization,
            "monotonic_increase": list(monotonic_increase),
            "monotonic_decrease": list(monotonic_decrease),
            "early_stopping": bool(early_stopping),
        }

    def params(self) -> dict[str, Any]:
        return {"trainer": self.name, **self._params, **_task_params(self.task)}

    def fit(
        self, X: pd.DataFrame, y: Any, *, seed: int = 0, threads: int | None = None
    ) -> TrainedModel:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        from mlcicd_dagster.models.loading import SklearnPredictor, to_frame, to_matrix
        from mlcicd_dagster.platform.cpu import openmp_threads

        y_enc = check_training_data(X, y, self.task)
        names = [str(c) for c in X.columns]
        p = self._params
        unknown = sorted((set(p["monotonic_increase"]) | set(p["monotonic_decrease"])) - set(names))
        if unknown:
            raise ValueError(f"monotonic constraint on unknown feature(s): {', '.join(unknown)}")
        if p["monotonic_increase"] or p["monotonic_decrease"]:
            if self.task.name == "multiclass":
                raise ValueError("monotonic constraints are not supported for multiclass tasks")
        cst = {
            n: 1 if n in p["monotonic_increase"] else -1 if n in p["monotonic_decrease"] else 0
            for n in names
        }
        strings, missing = _frame_mode(X, names)
        hgb_cls = (
            HistGradientBoostingRegressor
            if self.task.name == "regression"
            else HistGradientBoostingClassifier
        )
        frame_mode = bool(strings) or missing
        # text columns are encoded first: the model sees them first, then the others
        order = [*strings, *(n for n in names if n not in strings)]
        hgb = hgb_cls(
            max_iter=p["max_iter"],
            learning_rate=p["learning_rate"],
            max_leaf_nodes=p["max_leaf_nodes"],
            min_samples_leaf=p["min_samples_leaf"],
            l2_regularization=p["l2_regularization"],
            monotonic_cst=[cst[n] for n in order] if any(cst.values()) else None,
            # Codes as numbers, not native categoricals: with categorical features the
            # model builds an inner preprocessor holding functools.partial(check_array),
            # a type skops cannot vouch for (a partial can call anything).
            categorical_features=None,
            early_stopping=p["early_stopping"],
            validation_fraction=0.15,
            n_iter_no_change=20,
            random_state=seed,
        )
        model: Any = hgb
        if strings:
            model = _encoded_pipeline(hgb, strings)
        # text features: a frame through the encoder; otherwise a matrix (NaN allowed: the
        # trees route missing values), which keeps single-row scoring fast
        x: Any = (
            to_frame(X, names, strings, allow_missing=True)
            if strings
            else to_matrix(X, names, allow_missing=missing)
        )
        t0 = time.perf_counter()
        with openmp_threads(threads):
            model.fit(x, y_enc)
        elapsed = time.perf_counter() - t0
        return TrainedModel(
            model=model,
            predictor=SklearnPredictor(
                model,
                names,
                "in-memory",
                task=self.task,
                string_features=strings,
                allow_missing=frame_mode,
            ),
            feature_names=names,
            params={**self.params(), "seed": seed},
            info={"n_iter": int(hgb.n_iter_), "text_features": len(strings)},
            train_seconds=elapsed,
            task=self.task,
            string_features=strings,
            allow_missing=frame_mode,
        )


def _encoded_pipeline(estimator: Any, strings: Sequence[str]) -> Any:
    """Text columns -> ordinal codes (unknown/missing -> missing) -> ``estimator``.

    The encoded text columns come first, then the others in their order. (No pandas
    output: that would put ``functools.partial`` into the artifact, which skops
    rightly does not trust.)"""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    encode = ColumnTransformer(
        [
            (
                "text",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                ),
                list(strings),
            )
        ],
        remainder="passthrough",
    )
    return Pipeline([("encode", encode), ("model", estimator)])


def _task_params(task: Task) -> dict[str, Any]:
    """What of the task is part of the model's identity (its training fingerprint)."""
    return {"task": task.name, **({"classes": list(task.classes)} if task.classes else {})}


# ---------------------------------------------------------------------------
# factories: the user's own model
# ---------------------------------------------------------------------------
class FactoryError(ValueError):
    """A model factory that cannot be found, imported or called (message names it)."""


def split_factory_path(path: str) -> tuple[str, str]:
    """``pkg.mod:fn`` or ``pkg.mod.fn`` -> (``pkg.mod``, ``fn``)."""
    if not isinstance(path, str) or not path.strip():
        raise FactoryError("model_factory: expected a dotted path such as 'package.module:make'")
    text = path.strip()
    module, sep, attr = text.partition(":")
    if not sep:
        module, _, attr = text.rpartition(".")
    if not module or not attr or not all(p.isidentifier() for p in [*module.split("."), attr]):
        raise FactoryError(f"model_factory: {path!r} is not a dotted path such as 'pkg.mod:make'")
    return module, attr


def check_factory_path(path: str) -> None:
    """Cheap load-time check that ``path`` names a callable, without importing it.

    The module must be findable and, when it is Python source, define the name at
    its top level. (Importing the module could pull torch into every process that
    loads the code location; training imports it for real.)
    """
    import ast
    import importlib.util

    module, attr = split_factory_path(path)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise FactoryError(f"model_factory: cannot import {module!r} ({exc})") from None
    if spec is None:
        raise FactoryError(f"model_factory: no module named {module!r} (from {path!r})")
    origin = spec.origin or ""
    if not origin.endswith(".py"):
        return
    try:
        tree = ast.parse(open(origin, encoding="utf-8").read(), filename=origin)
    except (OSError, SyntaxError) as exc:
        raise FactoryError(f"model_factory: cannot read {origin}: {exc}") from None
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if attr not in defined:
        raise FactoryError(f"model_factory: {module!r} defines no {attr!r} (from {path!r})")


def resolve_factory(path: str) -> Callable[..., Any]:
    module, attr = split_factory_path(path)
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's factory's
        raise FactoryError(f"model_factory: importing {module!r} failed: {exc}") from exc
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise FactoryError(f"model_factory: {module}.{attr} is not a callable")
    return fn  # type: ignore[no-any-return]


def call_factory(path: str, params: Mapping[str, Any], **context: Any) -> Any:
    """Call the factory with the context it accepts plus ``params``."""
    fn = resolve_factory(path)
    try:  # context only to the parameters it names (``**kwargs`` are for model_params)
        named = {
            n for n, p in inspect.signature(fn).parameters.items() if p.kind is not p.VAR_KEYWORD
        }
        accepted = {k: v for k, v in context.items() if k in named and k not in params}
    except (TypeError, ValueError):
        accepted = {}
    try:
        return fn(**accepted, **dict(params))
    except TypeError as exc:
        raise FactoryError(f"model_factory: calling {path} failed: {exc}") from exc


class EstimatorTrainer:
    """The user's scikit-learn estimator or Pipeline (from ``factory``), fitted as given.

    The estimator sees a DataFrame of the features (numbers as float64, text features
    as text with missing values as NaN) and the encoded labels.
    """

    name = "sklearn_factory"

    def __init__(self, *, factory: str, task: Task | None = None, model_params: Any = None):
        self.factory = factory
        self.task = task or BinaryTask()
        self.model_params = dict(model_params or {})

    def params(self) -> dict[str, Any]:
        return {
            "trainer": self.name,
            "factory": self.factory,
            **self.model_params,
            **_task_params(self.task),
        }

    def fit(
        self, X: pd.DataFrame, y: Any, *, seed: int = 0, threads: int | None = None
    ) -> TrainedModel:
        from mlcicd_dagster.models.loading import SklearnPredictor, detect_flavor, to_frame
        from mlcicd_dagster.platform.cpu import openmp_threads

        y_enc = check_training_data(X, y, self.task)
        names = [str(c) for c in X.columns]
        estimator = call_factory(
            self.factory,
            self.model_params,
            n_features=len(names),
            n_outputs=self.task.n_outputs,
            feature_names=names,
            task=self.task.name,
            seed=seed,
        )
        if not hasattr(estimator, "fit"):
            raise FactoryError(
                f"model_factory {self.factory} returned {type(estimator).__name__}, "
                "not a scikit-learn estimator"
            )
        if detect_flavor(estimator) != "sklearn":
            raise FactoryError(
                f"model_factory {self.factory} returned a torch module: set `trainer: torch`"
            )
        strings, missing = _frame_mode(X, names)
        x = to_frame(X, names, strings, allow_missing=True)
        t0 = time.perf_counter()
        with openmp_threads(threads):
            estimator.fit(x, y_enc)
        elapsed = time.perf_counter() - t0
        predictor = SklearnPredictor(
            estimator,
            names,
            "in-memory",
            task=self.task,
            string_features=strings,
            allow_missing=True,
        )
        predictor.predict(x.head(2))  # refuse, now, an output that does not fit the task
        return TrainedModel(
            model=estimator,
            predictor=predictor,
            feature_names=names,
            params={**self.params(), "seed": seed},
            info={"estimator": type(estimator).__name__, "train_missing_values": missing},
            train_seconds=elapsed,
            task=self.task,
            string_features=strings,
            allow_missing=True,
        )


# ---------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------
class TorchTabularTrainer:
    name = "torch_mlp"

    def __init__(
        self,
        *,
        task: Task | None = None,
        factory: str | None = None,
        model_params: Any = None,
        hidden: Sequence[int] = (64, 32),
        dropout: float = 0.1,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        max_epochs: int = 60,
        patience: int = 6,
        val_fraction: float = 0.15,
        device: str | None = None,
    ):
        self.task = task or BinaryTask()
        self.factory = factory
        self.model_params = dict(model_params or {})
        if factory:
            self.name = "torch_factory"
        self._params: dict[str, Any] = {
            "hidden": list(hidden),
            "dropout": dropout,
            "lr": lr,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "max_epochs": max_epochs,
            "patience": patience,
            "val_fraction": val_fraction,
        }
        self.device = device

    def params(self) -> dict[str, Any]:
        extra = {"factory": self.factory, **self.model_params} if self.factory else {}
        return {"trainer": self.name, **self._params, **extra, **_task_params(self.task)}

    def fit(
        self, X: pd.DataFrame, y: Any, *, seed: int = 0, threads: int | None = None
    ) -> TrainedModel:
        import torch

        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            return self._fit(torch, X, y, seed)
        finally:
            torch.set_num_threads(previous)

    def _core(self, x_train: np.ndarray, names: list[str], seed: int) -> Any:
        """The network producing raw scores: the user's module or the default MLP."""
        import torch

        k = self.task.n_outputs
        if not self.factory:
            return _build_mlp(x_train, names, self._params["hidden"], self._params["dropout"], k)
        module = call_factory(
            self.factory,
            self.model_params,
            n_features=len(names),
            n_outputs=k,
            feature_names=names,
            task=self.task.name,
            seed=seed,
        )
        if not isinstance(module, torch.nn.Module):
            raise FactoryError(
                f"model_factory {self.factory} returned {type(module).__name__}, not a "
                "torch.nn.Module (trainer: torch)"
            )
        with torch.no_grad():
            probe = module.eval()(torch.from_numpy(x_train[:2].astype(np.float32)))
        shape = tuple(probe.shape)
        ok = shape in ((2, k),) if k > 1 else shape in ((2,), (2, 1))
        if not ok:
            want = f"(n, {k})" if k > 1 else "(n,) or (n, 1)"
            raise TaskError(
                f"model_factory {self.factory}: the module returned shape {shape} for 2 rows; "
                f"a {self.task.name} task needs raw scores of shape {want}"
            )
        return module

    def _fit(self, torch: Any, X: pd.DataFrame, y: Any, seed: int) -> TrainedModel:
        from mlcicd_dagster.models.loading import TorchPredictor, string_columns, to_matrix

        y_enc = check_training_data(X, y, self.task)
        names = [str(c) for c in X.columns]
        strings = string_columns(X, names)
        if strings:
            raise TaskError(
                f"the torch trainer takes numbers only; feature(s) {', '.join(strings)} hold "
                "text: encode them in the data or use the sklearn trainer"
            )
        p = self._params
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        use_amp = device.startswith("cuda")
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)

        x = to_matrix(X, names, np.float64)
        idx = rng.permutation(len(x))
        n_val = max(1, int(len(x) * p["val_fraction"]))
        val_idx, tr_idx = idx[:n_val], idx[n_val:]
        task = self.task.name
        y_mu, y_sd = 0.0, 1.0
        if task == "regression":
            y_mu, y_sd = float(y_enc[tr_idx].mean()), float(y_enc[tr_idx].std()) or 1.0
        core = self._core(x[tr_idx], names, seed)
        module = task_module(core, task, y_mu, y_sd)
        module.to(device)
        y_dtype = np.int64 if task == "multiclass" else np.float32
        y_fit = (y_enc - y_mu) / y_sd if task == "regression" else y_enc
        xt = torch.from_numpy(x[tr_idx].astype(np.float32)).to(device)
        yt = torch.from_numpy(np.asarray(y_fit[tr_idx]).astype(y_dtype)).to(device)
        xv = torch.from_numpy(x[val_idx].astype(np.float32)).to(device)
        yv = torch.from_numpy(np.asarray(y_fit[val_idx]).astype(y_dtype)).to(device)
        loss_fn = _loss_fn(torch, task)
        opt = torch.optim.AdamW(module.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        best_loss, best_state, best_epoch, bad = float("inf"), None, 0, 0
        history = []
        t0 = time.perf_counter()
        epoch = 0
        for epoch in range(1, p["max_epochs"] + 1):
            module.train()
            order = torch.randperm(len(xt), generator=gen).to(device)
            for start in range(0, len(xt), p["batch_size"]):
                b = order[start : start + p["batch_size"]]
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=use_amp):
                    loss = loss_fn(module.scores(xt[b]).float(), yt[b])
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            module.eval()
            with torch.no_grad():
                vloss = float(loss_fn(module.scores(xv).float(), yv))
            history.append(vloss)
            if vloss < best_loss - 1e-5:
                best_loss, best_epoch, bad = vloss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                bad += 1
                if bad >= p["patience"]:
                    break
        elapsed = time.perf_counter() - t0
        if best_state is not None:
            module.load_state_dict(best_state)
        module = module.to("cpu").eval()
        return TrainedModel(
            model=module,
            predictor=TorchPredictor(module, names, "in-memory", task=self.task),
            feature_names=names,
            params={**self.params(), "seed": seed},
            info={
                "device": device,
                "mixed_precision": str(amp_dtype).replace("torch.", "") if use_amp else "off",
                "epochs": epoch,
                "best_epoch": best_epoch,
                "best_val_loss": best_loss,
                "val_curve": history,
            },
            train_seconds=elapsed,
            task=self.task,
        )


def _loss_fn(torch: Any, task: str) -> Any:
    f = torch.nn.functional
    if task == "binary":
        return f.binary_cross_entropy_with_logits
    if task == "multiclass":
        return f.cross_entropy
    return f.mse_loss


HEAVY_TAIL_ABS = 100.0
"""Columns whose largest |value| exceeds this get a signed log1p before scaling."""


def task_module(core: Any, task: str, y_mu: float = 0.0, y_sd: float = 1.0) -> Any:
    """Wrap a network of raw scores with the task's head: what is exported and served.

    ``scores(x)``: raw scores (logits, or the standardised target), used by the loss;
    ``forward(x)``: the task's output (P(positive), class probabilities, the value).
    """
    import torch

    class _TaskModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.core = core
            self.task = task
            self.register_buffer("y_mu", torch.tensor(float(y_mu)))
            self.register_buffer("y_sd", torch.tensor(float(y_sd)))

        def scores(self, x: torch.Tensor) -> torch.Tensor:
            out = self.core(x)
            if self.task != "multiclass" and out.dim() == 2:
                out = out.squeeze(-1)
            return out  # type: ignore[no-any-return]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.scores(x)
            if self.task == "binary":
                return torch.sigmoid(s)
            if self.task == "multiclass":
                return torch.softmax(s, dim=-1)
            y_sd: Any = self.y_sd
            y_mu: Any = self.y_mu
            return s * y_sd + y_mu

    return _TaskModule()


def _build_mlp(
    x: np.ndarray, names: Sequence[str], hidden: Sequence[int], dropout: float, n_out: int = 1
) -> Any:
    """(n, d) float32 raw features -> (n, n_out) raw scores. Preprocessing inside."""
    import torch

    heavy = np.abs(x).max(axis=0) > HEAVY_TAIL_ABS
    z = np.where(heavy, np.sign(x) * np.log1p(np.abs(x)), x)
    mu = z.mean(axis=0)
    sd = z.std(axis=0)
    sd[sd == 0] = 1.0

    class TabularMLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("heavy", torch.from_numpy(heavy))
            self.register_buffer("mu", torch.from_numpy(mu.astype(np.float32)))
            self.register_buffer("sd", torch.from_numpy(sd.astype(np.float32)))
            layers: list[torch.nn.Module] = []
            width = len(names)
            for h in hidden:
                layers += [torch.nn.Linear(width, h), torch.nn.ReLU(), torch.nn.Dropout(dropout)]
                width = h
            layers.append(torch.nn.Linear(width, n_out))
            self.net = torch.nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            heavy: Any = self.heavy
            mu: Any = self.mu
            sd: Any = self.sd
            z = torch.where(heavy, torch.sign(x) * torch.log1p(torch.abs(x)), x)
            return self.net((z - mu) / sd)  # type: ignore[no-any-return]

    return TabularMLP()


TRAINERS = {"sklearn": SklearnTrainer, "torch": TorchTabularTrainer}


def make_trainer(
    kind: str = "sklearn",
    params: Mapping[str, Any] | None = None,
    *,
    task: Task | None = None,
    factory: str | None = None,
    model_params: Mapping[str, Any] | None = None,
) -> Trainer:
    """Trainer by config: ``kind`` ``sklearn`` (default) or ``torch``, for ``task``
    (default binary); with ``factory``, the user's estimator (sklearn) or module (torch)."""
    if kind not in TRAINERS:
        raise ValueError(f"trainer: unknown trainer {kind!r}; choose one of {', '.join(TRAINERS)}")
    kwargs = dict(params or {})
    trainer: Trainer
    try:
        if factory and kind == "sklearn":
            if kwargs:
                raise ValueError(
                    "trainer_params are for the built-in trainers; pass the estimator's "
                    "settings as model_params"
                )
            trainer = EstimatorTrainer(factory=factory, task=task, model_params=model_params)
        elif kind == "torch":
            trainer = TorchTabularTrainer(
                task=task, factory=factory, model_params=model_params, **kwargs
            )
        else:
            trainer = SklearnTrainer(task=task, **kwargs)
    except TypeError as exc:
        raise ValueError(f"trainer_params: bad parameters for trainer {kind!r}: {exc}") from exc
    return trainer
