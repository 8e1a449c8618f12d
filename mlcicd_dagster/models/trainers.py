"""Trainers: one interface, two implementations.

* ``SklearnTrainer`` (the default): HistGradientBoostingClassifier. Seconds on
  tens of thousands of rows, handles heavy-tailed amounts without scaling, and
  takes monotonic constraints, so "more payment delay never lowers the risk" is
  guaranteed by construction, not hoped for.
* ``TorchTabularTrainer``: an MLP, a competing candidate selected by config
  (``trainer: torch``), not the default. Uses a GPU when present (mixed
  precision there), the CPU otherwise; seeded and reproducible; stops early on
  a validation split. Its preprocessing (signed log of heavy-tailed columns,
  standardisation) lives inside the module, so the exported graph needs no
  training code.

``fit`` takes a feature frame and labels and returns a ``TrainedModel``: the
object ``log_and_register`` saves and an in-memory ``Predictor``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlcicd_dagster.models.predictor import Predictor


@dataclass
class TrainedModel:
    model: Any  # sklearn estimator or torch.nn.Module (CPU, eval mode)
    predictor: Predictor
    feature_names: list[str]
    params: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0


class Trainer(Protocol):
    """Fits a binary classifier whose ``predictor.predict_proba`` is P(label == 1)."""

    name: str

    def params(self) -> dict[str, Any]: ...

    def fit(
        self, X: pd.DataFrame, y: np.ndarray, *, seed: int = 0, threads: int | None = None
    ) -> TrainedModel:
        """``threads``: CPU threads the fit may use (None: the library's default, every
        core). The pipeline passes fewer when a helper process shares the machine."""
        ...


def _check_xy(X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"{len(X)} feature rows but {len(y)} labels")
    if len(X) < 50:
        raise ValueError(f"too few training rows ({len(X)})")
    labels = set(np.unique(y).tolist())
    if not labels <= {0, 1} or len(labels) < 2:
        raise ValueError(f"labels must be 0/1 with both classes present, got {sorted(labels)}")
    return y.astype(np.int64)


class SklearnTrainer:
    name = "sklearn_hgb"
    # HistGradientBoosting parallelises with OpenMP; ``threads`` caps it (platform.cpu).

    def __init__(
        self,
        *,
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
        return {"trainer": self.name, **self._params}

    def fit(
        self, X: pd.DataFrame, y: np.ndarray, *, seed: int = 0, threads: int | None = None
    ) -> TrainedModel:
        from sklearn.ensemble import HistGradientBoostingClassifier

        from mlcicd_dagster.models.loading import SklearnPredictor, to_matrix
        from mlcicd_dagster.platform.cpu import openmp_threads

        y = _check_xy(X, y)
        names = [str(c) for c in X.columns]
        p = self._params
        unknown = sorted((set(p["monotonic_increase"]) | set(p["monotonic_decrease"])) - set(names))
        if unknown:
            raise ValueError(f"monotonic constraint on unknown feature(s): {', '.join(unknown)}")
        cst = [
            1 if n in p["monotonic_increase"] else -1 if n in p["monotonic_decrease"] else 0
            for n in names
        ]
        t0 = time.perf_counter()
        model = HistGradientBoostingClassifier(
            max_iter=p["max_iter"],
            learning_rate=p["learning_rate"],
            max_leaf_nodes=p["max_leaf_nodes"],
            min_samples_leaf=p["min_samples_leaf"],
            l2_regularization=p["l2_regularization"],
            monotonic_cst=cst if any(cst) else None,
            early_stopping=p["early_stopping"],
            validation_fraction=0.15,
            n_iter_no_change=20,
            random_state=seed,
        )
        with openmp_threads(threads):
            model.fit(to_matrix(X, names), y)
        elapsed = time.perf_counter() - t0
        return TrainedModel(
            model=model,
            predictor=SklearnPredictor(model, names, "in-memory"),
            feature_names=names,
            params={**self.params(), "seed": seed},
            info={"n_iter": int(model.n_iter_)},
            train_seconds=elapsed,
        )


class TorchTabularTrainer:
    name = "torch_mlp"

    def __init__(
        self,
        *,
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
        return {"trainer": self.name, **self._params}

    def fit(
        self, X: pd.DataFrame, y: np.ndarray, *, seed: int = 0, threads: int | None = None
    ) -> TrainedModel:
        import torch

        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            return self._fit(torch, X, y, seed)
        finally:
            torch.set_num_threads(previous)

    def _fit(self, torch: Any, X: pd.DataFrame, y: np.ndarray, seed: int) -> TrainedModel:
        from mlcicd_dagster.models.loading import TorchPredictor, to_matrix

        y = _check_xy(X, y)
        names = [str(c) for c in X.columns]
        p = self._params
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        use_amp = device.startswith("cuda")
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)

        x = to_matrix(X, names, np.float64)
        idx = rng.permutation(len(x))
        n_val = max(1, int(len(x) * p["val_fraction"]))
        val_idx, tr_idx = idx[:n_val], idx[n_val:]
        module = _build_mlp(x[tr_idx], names, p["hidden"], p["dropout"])
        module.to(device)
        xt = torch.from_numpy(x[tr_idx].astype(np.float32)).to(device)
        yt = torch.from_numpy(y[tr_idx].astype(np.float32)).to(device)
        xv = torch.from_numpy(x[val_idx].astype(np.float32)).to(device)
        yv = torch.from_numpy(y[val_idx].astype(np.float32)).to(device)
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
                    logits = module.logits(xt[b])
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        logits.float(), yt[b]
                    )
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            module.eval()
            with torch.no_grad():
                vloss = float(
                    torch.nn.functional.binary_cross_entropy_with_logits(module.logits(xv), yv)
                )
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
            predictor=TorchPredictor(module, names, "in-memory"),
            feature_names=names,
            params={**self.params(), "seed": seed},
            info={
                "device": device,
                "mixed_precision": str(amp_dtype).replace("torch.", "") if use_amp else "off",
                "epochs": epoch,
                "best_epoch": best_epoch,
                "best_val_logloss": best_loss,
                "val_curve": history,
            },
            train_seconds=elapsed,
        )


HEAVY_TAIL_ABS = 100.0
"""Columns whose largest |value| exceeds this get a signed log1p before scaling."""


def _build_mlp(x: np.ndarray, names: Sequence[str], hidden: Sequence[int], dropout: float) -> Any:
    import torch

    heavy = np.abs(x).max(axis=0) > HEAVY_TAIL_ABS
    z = np.where(heavy, np.sign(x) * np.log1p(np.abs(x)), x)
    mu = z.mean(axis=0)
    sd = z.std(axis=0)
    sd[sd == 0] = 1.0

    class TabularMLP(torch.nn.Module):
        """(n, d) float32 raw features -> (n,) P(positive). Preprocessing inside."""

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
            layers.append(torch.nn.Linear(width, 1))
            self.net = torch.nn.Sequential(*layers)

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            heavy: Any = self.heavy
            mu: Any = self.mu
            sd: Any = self.sd
            z = torch.where(heavy, torch.sign(x) * torch.log1p(torch.abs(x)), x)
            return self.net((z - mu) / sd).squeeze(-1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.logits(x))

    return TabularMLP()


TRAINERS = {"sklearn": SklearnTrainer, "torch": TorchTabularTrainer}


def make_trainer(kind: str = "sklearn", params: Mapping[str, Any] | None = None) -> Trainer:
    """Trainer by config name: ``sklearn`` (default) or ``torch``."""
    if kind not in TRAINERS:
        raise ValueError(f"unknown trainer {kind!r}; choose one of {', '.join(TRAINERS)}")
    try:
        trainer: Trainer = TRAINERS[kind](**dict(params or {}))
    except TypeError as exc:
        raise ValueError(f"bad parameters for trainer {kind!r}: {exc}") from exc
    return trainer
