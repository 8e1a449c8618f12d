"""A synthetic tabular data source for `mlcicd init` tests and its bench (no downloads).

``draw(n, seed)`` draws rows from one fixed source: light and heavy tails, a column
that can be negative, integer codes, a string category and missing values, and a
binary label from a logistic model of the features. Draws with different seeds are
valid batches of the same source (what the suite must accept).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def draw(
    n: int, seed: int, *, strings: bool = True, missing: bool = True, start_id: int = 0
) -> pd.DataFrame:
    """``strings``: add the string category; ``missing``: leave 5% of ``score`` empty."""
    rng = np.random.default_rng(seed)
    age = np.clip(np.round(rng.normal(42, 12, n)), 18, 95).astype(np.int64)
    income = np.round(rng.lognormal(10.5, 0.8, n), 2)
    balance = np.round(rng.normal(1500, 4000, n), 2)
    claims = rng.pareto(3.0, n) * 1000
    products = rng.choice([1, 2, 3, 4], n, p=[0.5, 0.3, 0.15, 0.05]).astype(np.int64)
    tenure = rng.exponential(5.0, n)
    score = rng.normal(600, 80, n)
    gaps = rng.random(n) < 0.05
    if missing:
        score[gaps] = np.nan
    logit = (
        -1.0
        + 0.03 * (age - 42)
        - 0.5 * (np.log(income) - 10.5)
        + 0.0002 * balance
        + 0.4 * (products - 2)
        - 0.01 * np.nan_to_num(score - 600)
        + 0.0005 * claims
    )
    frame = {
        "customer_id": np.arange(start_id, start_id + n, dtype=np.int64),
        "age": age,
        "income": income,
        "balance": balance,
        "claims": np.round(claims, 2),
        "products": products,
        "tenure": np.round(tenure, 3),
        "score": np.round(score, 1),
    }
    if strings:
        region = rng.choice(["north", "south", "east", "west", "centre"], n).astype(object)
        region[rng.random(n) < 0.03] = None
        frame["region"] = region
        logit = logit + np.where(region == "north", 0.5, 0.0)
    frame["churned"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(frame)
