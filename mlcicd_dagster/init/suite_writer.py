"""A reviewable Great Expectations suite from a data profile.

The suite is written in the form the data gate reads (``mlcicd_dagster.data.suite``:
``ExpectationSuite.to_json_dict()`` as YAML, with severities and ``meta.why``), one
block per column with a comment saying what was profiled. The rules:

* **columns**: every profiled column must be there (extra columns: warn);
* **types**: integer codes stay integers, numbers stay numbers, booleans booleans
  (text columns have no type rule: any value reads as text; their categories judge);
* **nulls**: a column never empty in the data must stay so (ERROR); one with
  missing values may have up to twice its rate plus 2 points (WARN) and blocks only
  when it is far emptier than ever seen (ERROR at three times its rate plus 10 points);
* **ranges with slack**: a value outside the profiled range is reported (WARN at
  ``[min, max]`` widened by 10% of the span); the batch is blocked (ERROR) only
  beyond a bound far out in the tail: the span again, or seven mean excesses over
  the 99th percentile (an exponential tail crosses that once in ~1,000 batches as
  large as the profile), or three times the distance from the 99th percentile to the
  maximum (heavy tails), whichever is widest. A column never negative stays
  non-negative. So a valid batch from the same source is not quarantined because
  a sample's extremes are not the population's;
* **categories**: values never seen are reported (WARN); the batch blocks only when
  more than 5% of its rows (or five times the share of values seen once, the
  Good-Turing estimate of unseen values) are unknown;
* **label**: its domain for the task: the classes (ERROR on any other value, never
  empty), or numbers within the slack range for regression; a binary 0/1 label's
  positive rate is watched (WARN);
* **id**: never empty, unique within a batch.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from mlcicd_dagster.init.profile import ColumnProfile, DataProfile

INTEGER_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype",
    "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype",
]  # fmt: skip
NUMBER_TYPES = [*INTEGER_TYPES, "float32", "float64", "Float32Dtype", "Float64Dtype"]
BOOL_TYPES = ["bool", "BooleanDtype"]
#: Mean excesses over the 99th percentile added to the maximum (exponential tail: a
#: batch as large as the profile crosses it with probability ~ e^-7 ~ 1e-3).
TAIL_EXCESSES = 7.0
#: Heavy tails: the distance from the 99th percentile to the maximum, times this.
HEAVY_TAIL_FACTOR = 3.0
#: Warning band: the profiled range widened by this share of its span.
WARN_SLACK = 0.10
#: Share of a batch's rows that may carry unseen categories before it blocks.
UNSEEN_FLOOR = 0.05


def _sig(value: float, *, up: bool, digits: int = 4) -> float | int:
    """``value`` rounded outward (up or down) to ``digits`` significant digits."""
    if value == 0 or not math.isfinite(value):
        return 0 if value == 0 else value
    scale = 10 ** (digits - 1 - math.floor(math.log10(abs(value))))
    rounded = (math.ceil if up else math.floor)(value * scale) / scale
    return int(rounded) if float(rounded).is_integer() else float(f"{rounded:.{digits + 2}g}")


def slack_bounds(col: ColumnProfile) -> tuple[float | int, float | int]:
    """The blocking (ERROR) range of a numeric column: see the module docstring."""
    assert col.minimum is not None and col.maximum is not None
    lo, hi = col.minimum, col.maximum
    span = hi - lo
    if span == 0:
        span = abs(hi) or 1.0
    w_hi = max(
        span,
        TAIL_EXCESSES * (col.upper_excess or 0.0),
        HEAVY_TAIL_FACTOR * (hi - (col.q99 if col.q99 is not None else hi)),
    )
    w_lo = max(
        span,
        TAIL_EXCESSES * (col.lower_excess or 0.0),
        HEAVY_TAIL_FACTOR * ((col.q01 if col.q01 is not None else lo) - lo),
    )
    low = 0.0 if lo >= 0 else lo - w_lo
    high = 0.0 if hi <= 0 else hi + w_hi
    low_r, high_r = _sig(low, up=False), _sig(high, up=True)
    if col.kind == "integer":
        return math.floor(low_r), math.ceil(high_r)
    return low_r, high_r


def warn_bounds(col: ColumnProfile) -> tuple[float | int, float | int]:
    assert col.minimum is not None and col.maximum is not None
    lo, hi = col.minimum, col.maximum
    pad = WARN_SLACK * (hi - lo)
    low = lo - pad if lo < 0 or lo - pad >= 0 else 0.0
    high = hi + pad
    low_r, high_r = _sig(low, up=False), _sig(high, up=True)
    if col.kind == "integer":
        return math.floor(low_r), math.ceil(high_r)
    return low_r, high_r


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


def _exp(etype: str, kwargs: dict[str, Any], severity: str, why: str) -> dict[str, Any]:
    return {"type": etype, "kwargs": kwargs, "severity": severity, "meta": {"why": why}}


def _type_rule(col: ColumnProfile) -> dict[str, Any] | None:
    if col.kind == "integer" and col.nulls == 0:
        return _exp(
            "expect_column_values_to_be_in_type_list",
            {"column": col.name, "type_list": INTEGER_TYPES},
            "critical",
            "profiled as whole numbers: integers stay integers",
        )
    if col.kind in ("integer", "float"):
        why = "profiled as numbers" + (
            " (whole numbers with missing values read as floats)" if col.kind == "integer" else ""
        )
        return _exp(
            "expect_column_values_to_be_in_type_list",
            {"column": col.name, "type_list": NUMBER_TYPES},
            "critical",
            why,
        )
    if col.kind == "bool" and col.nulls == 0:
        return _exp(
            "expect_column_values_to_be_in_type_list",
            {"column": col.name, "type_list": BOOL_TYPES},
            "critical",
            "profiled as booleans",
        )
    return None


def _null_rules(col: ColumnProfile, *, required: bool) -> list[dict[str, Any]]:
    if required or col.nulls == 0:
        why = (
            f"the {col.role} is never empty"
            if required
            else f"never empty in the {col.rows} profiled rows"
        )
        return [_exp("expect_column_values_to_not_be_null", {"column": col.name}, "critical", why)]
    rate = col.null_rate
    out = []
    warn_max = min(1.0, 2 * rate + 0.02)
    if warn_max < 1.0:
        out.append(
            _exp(
                "expect_column_values_to_not_be_null",
                {"column": col.name, "mostly": round(1 - warn_max, 4)},
                "warning",
                f"{rate:.1%} missing in the profile; more than {warn_max:.0%} is reported",
            )
        )
    block_max = min(1.0, 3 * rate + 0.10)
    if block_max < 1.0:
        out.append(
            _exp(
                "expect_column_values_to_not_be_null",
                {"column": col.name, "mostly": round(1 - block_max, 4)},
                "critical",
                f"{rate:.1%} missing in the profile; a batch more than {block_max:.0%} empty "
                "is not the same source",
            )
        )
    return out


def _range_rules(col: ColumnProfile, what: str) -> list[dict[str, Any]]:
    if col.minimum is None or col.maximum is None:
        return []
    lo_c, hi_c = slack_bounds(col)
    lo_w, hi_w = warn_bounds(col)
    profiled = f"profiled {_fmt(col.minimum)}..{_fmt(col.maximum)}"
    sign = " (never negative in the data: stays non-negative)" if col.minimum >= 0 else ""
    return [
        _exp(
            "expect_column_values_to_be_between",
            {"column": col.name, "min_value": lo_c, "max_value": hi_c},
            "critical",
            f"{what}: {profiled}, p1..p99 {_fmt(col.q01)}..{_fmt(col.q99)}; blocks only far "
            f"in the tail{sign}",
        ),
        _exp(
            "expect_column_values_to_be_between",
            {"column": col.name, "min_value": lo_w, "max_value": hi_w},
            "warning",
            f"{profiled}: a value beyond it (plus 10% of the span) is reported, not blocked",
        ),
    ]


def _category_rules(col: ColumnProfile) -> list[dict[str, Any]]:
    if not col.categories:
        return []
    seen = list(col.categories)
    complete = len(seen) == col.distinct
    out = []
    if col.kind == "integer" and complete:
        lo, hi = int(min(seen)), int(max(seen))
        allowed: list[Any] = list(range(lo, hi + 1)) if hi - lo <= 4 * len(seen) + 10 else seen
    else:
        allowed = seen
    if complete:
        singles = sum(1 for c in col.category_counts if c == 1)
        unseen = max(UNSEEN_FLOOR, 5 * singles / max(col.rows - col.nulls, 1))
        if unseen < 1.0:
            out.append(
                _exp(
                    "expect_column_values_to_be_in_set",
                    {"column": col.name, "value_set": allowed, "mostly": round(1 - unseen, 4)},
                    "critical",
                    f"{len(seen)} values seen; a batch with more than {unseen:.0%} unknown "
                    "values is not the same source",
                )
            )
    out.append(
        _exp(
            "expect_column_values_to_be_in_set",
            {"column": col.name, "value_set": seen},
            "warning",
            f"the {len(seen)} values seen in the profile"
            + ("" if complete else f" (the most frequent of {col.distinct})")
            + "; a new value is reported",
        )
    )
    return out


def _label_rules(profile: DataProfile) -> list[dict[str, Any]]:
    col = profile.label_profile
    out = [*_null_rules(col, required=True)]
    if profile.task == "regression":
        type_rule = _type_rule(col)
        if type_rule is not None:
            type_rule["kwargs"]["type_list"] = NUMBER_TYPES
            type_rule["meta"]["why"] = "a regression target is a number"
            out.append(type_rule)
        out += _range_rules(col, "regression target")
        return out
    classes = list(profile.classes)
    out.append(
        _exp(
            "expect_column_values_to_be_in_set",
            {"column": col.name, "value_set": classes},
            "critical",
            f"the label's domain for task {profile.task}: {len(classes)} classes",
        )
    )
    if profile.task == "binary" and set(classes) == {0, 1} and col.mean is not None:
        p = col.mean
        lo, hi = _sig(p / 3, up=False, digits=2), _sig(1 - (1 - p) / 3, up=True, digits=2)
        out.append(
            _exp(
                "expect_column_mean_to_be_between",
                {"column": col.name, "min_value": lo, "max_value": hi},
                "warning",
                f"positive rate {p:.1%} in the profile; far from it suggests a mislabelled "
                "or filtered batch",
            )
        )
    return out


def _id_rules(col: ColumnProfile) -> list[dict[str, Any]]:
    out = [*_null_rules(col, required=True)]
    type_rule = _type_rule(col)
    if type_rule is not None and col.kind == "integer":
        out.append(type_rule)
    out.append(
        _exp(
            "expect_column_values_to_be_unique",
            {"column": col.name},
            "critical",
            "one row per id within a batch",
        )
    )
    return out


def column_rules(profile: DataProfile, col: ColumnProfile) -> list[dict[str, Any]]:
    if col.role == "label":
        return _label_rules(profile)
    if col.role == "id":
        return _id_rules(col)
    rules = [*_null_rules(col, required=False)]
    type_rule = _type_rule(col)
    if type_rule is not None:
        rules.append(type_rule)
    if col.role == "numeric":
        rules += _range_rules(col, "numeric feature")
    elif col.role == "categorical":
        rules += _category_rules(col)
    return rules


def column_summary(col: ColumnProfile) -> str:
    parts = [f"{col.name}: {col.role}, {col.kind}", f"{col.nulls} missing"]
    if col.minimum is not None:
        parts.append(f"{_fmt(col.minimum)}..{_fmt(col.maximum)}")
    if col.categories and col.role in ("categorical", "label"):
        parts.append(f"{col.distinct} distinct")
    return ", ".join(parts)


def build_suite(profile: DataProfile, name: str) -> dict[str, Any]:
    """The suite as a mapping (what ``data.suite.suite_from_dict`` reads)."""
    # the label and the ID column are declared once, in defs.yaml (the suite checks them)
    policy: dict[str, Any] = {"extra_columns": "warn"}
    expectations: list[dict[str, Any]] = [
        _exp(
            "expect_table_columns_to_match_set",
            {"column_set": [c.name for c in profile.columns], "exact_match": False},
            "critical",
            "every profiled column must be there (extras: see meta.mlcicd.extra_columns)",
        ),
        _exp(
            "expect_table_row_count_to_be_between",
            {"min_value": 1},
            "critical",
            "a batch is at least one row",
        ),
    ]
    for col in profile.columns:
        expectations += column_rules(profile, col)
    return {"name": name, "meta": {"mlcicd": policy}, "expectations": expectations}


def _dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=None, width=100)


def suite_yaml(profile: DataProfile, name: str, *, source: str) -> str:
    """The suite file's text: the mapping of :func:`build_suite`, commented per column."""
    suite = build_suite(profile, name)
    lines = [
        f"# Great Expectations suite for {name}, profiled by `mlcicd init` from {source}",
        f"# ({profile.rows} rows). Review it: every rule says why in meta.why.",
        "# severity: critical = ERROR (the batch is quarantined); warning = WARN (reported).",
        "# Ranges have slack: the profiled range only warns; blocking bounds lie far in the",
        "# tail, so that a valid batch from the same source is not quarantined.",
        _dump({"name": suite["name"], "meta": suite["meta"]}).rstrip(),
        "expectations:",
    ]
    table = suite["expectations"][:2]
    lines.append("# -- the table")
    lines.append(_dump(table).rstrip())
    for col in profile.columns:
        rules = column_rules(profile, col)
        if not rules:
            continue
        lines.append(f"# -- {column_summary(col)}")
        lines.append(_dump(rules).rstrip())
    return "\n".join(lines) + "\n"
