"""Constants shared by the data-gate tests (a unique module name: no clash with other folders)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "assets" / "credit_default" / "data"
SUITE_FILE = REPO / "assets" / "credit_default" / "expectations.yaml"
LABEL = "default.payment.next.month"
DATASET = "credit_default"


def mutations() -> dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str, str]]:
    """case -> (mutation, expectation type that must fail with ERROR, column)."""

    def setv(col, value, rows=slice(0, 3)):
        def f(df):
            df = df.copy()
            if df[col].dtype.kind in "iu" and isinstance(value, float):
                df[col] = df[col].astype("float64")
            if isinstance(value, str):
                df[col] = df[col].astype(object)
            df.loc[df.index[rows], col] = value
            return df

        return f

    return {
        "missing column": (
            lambda df: df.drop(columns=["PAY_AMT3"]),
            "expect_table_columns_to_match_set",
            "PAY_AMT3",
        ),
        "missing label": (
            lambda df: df.drop(columns=[LABEL]),
            "expect_table_columns_to_match_set",
            LABEL,
        ),
        "string in numeric": (setv("AGE", "abc"), "expect_column_values_to_be_in_type_list", "AGE"),
        "all-null column": (
            setv("BILL_AMT2", np.nan, slice(None)),
            "expect_column_values_to_not_be_null",
            "BILL_AMT2",
        ),
        "NaN": (setv("LIMIT_BAL", np.nan), "expect_column_values_to_not_be_null", "LIMIT_BAL"),
        "infinite": (setv("BILL_AMT4", np.inf), "expect_column_values_to_be_between", "BILL_AMT4"),
        "label outside {0,1}": (setv(LABEL, 2), "expect_column_values_to_be_in_set", LABEL),
        "duplicated IDs": (setv("ID", 42), "expect_column_values_to_be_unique", "ID"),
        "duplicated rows": (
            lambda df: pd.concat([df, df.head(5)]),
            "expect_column_values_to_be_unique",
            "ID",
        ),
        "absurd age": (setv("AGE", 500), "expect_column_values_to_be_between", "AGE"),
        "negative payment": (
            setv("PAY_AMT2", -100.0),
            "expect_column_values_to_be_between",
            "PAY_AMT2",
        ),
        "unknown code": (setv("SEX", 7), "expect_column_values_to_be_in_set", "SEX"),
    }
