"""Models a user brings (referenced by dotted path from the task tests)."""

from __future__ import annotations

from typing import Any


def random_forest(seed: int = 0, n_estimators: int = 20) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1)


def scaled_logistic(**params: Any) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, **params))


def text_pipeline(feature_names: list[str]) -> Any:
    """One-hot the text column, impute the numbers: a Pipeline by column name."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    text = ["city"]
    nums = [n for n in feature_names if n not in text]
    prep = ColumnTransformer(
        [
            (
                "text",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="?"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                text,
            ),
            ("num", SimpleImputer(), nums),
        ]
    )
    return make_pipeline(prep, LogisticRegression(max_iter=500))


def linear_scores(n_features: int, n_outputs: int) -> Any:
    """A torch module of raw scores: the trainer adds the task's head."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(n_features, 16), torch.nn.ReLU(), torch.nn.Linear(16, n_outputs)
    )


def returns_probabilities_twice(n_features: int) -> Any:
    """A module with the wrong output width for its task (3 scores for binary)."""
    import torch

    return torch.nn.Linear(n_features, 3)
