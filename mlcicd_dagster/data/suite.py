"""An expectation suite file in Great Expectations 1.x form, with severities and policies.

The file (YAML or JSON) is what ``ExpectationSuite.to_json_dict()`` writes, so GE
loads it as is::

    name: credit_default
    meta:
      mlcicd:                    # our policies; GE keeps ``meta`` verbatim
        extra_columns: warn      # error | warn | ignore (extras are dropped when accepted)
        label: default.payment.next.month
        id_column: ID
    expectations:
      - type: expect_column_values_to_be_between
        kwargs: {column: AGE, min_value: 18, max_value: 120}
        severity: critical       # GE 1.x FailureSeverity: critical | warning | info
        meta: {why: "AGE 500 is a typo, not a customer"}

Severity: GE's ``critical`` is our ERROR (blocks the batch), ``warning`` is WARN
(reported, lets the batch through), ``info`` is INFO. ``ERROR``/``WARN`` are
accepted as aliases in the file. The library knows no dataset: everything
specific lives in the file.

Loading parses and checks the file's structure without importing GE (sensors and
``definitions.py`` stay light); :meth:`Suite.to_gx` builds the real GE suite, which
is where GE validates every expectation's arguments (a test does this for the
shipped suite).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlcicd_dagster.platform import yamlio

if TYPE_CHECKING:  # pragma: no cover
    import great_expectations as gx
    import pandas as pd

#: File severities -> GE FailureSeverity values.
_SEVERITY_ALIASES = {
    "critical": "critical",
    "error": "critical",
    "warning": "warning",
    "warn": "warning",
    "info": "info",
}
#: GE FailureSeverity -> what reports and the UI say.
SEVERITY_LABEL = {"critical": "ERROR", "warning": "WARN", "info": "INFO"}
EXTRA_COLUMN_POLICIES = ("error", "warn", "ignore")
#: id given to the expectation synthesised from the ``extra_columns`` policy.
EXTRA_COLUMNS_ID = "mlcicd-extra-columns"


class SuiteError(ValueError):
    """The suite file is not a usable suite; the message names the problem."""


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation of the suite, in GE's configuration terms."""

    type: str
    kwargs: dict[str, Any]
    severity: str = "critical"  # GE FailureSeverity value
    meta: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    @property
    def column(self) -> str | None:
        col = self.kwargs.get("column")
        return None if col is None else str(col)

    @property
    def severity_label(self) -> str:
        return SEVERITY_LABEL[self.severity]

    def to_gx_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "kwargs": copy.deepcopy(self.kwargs),
            "meta": {**copy.deepcopy(self.meta), "mlcicd_id": self.id},
            "severity": self.severity,
        }


@dataclass(frozen=True)
class Suite:
    name: str
    expectations: tuple[ExpectationSpec, ...]
    extra_columns: str = "warn"
    label: str | None = None
    id_column: str | None = None
    #: Declared columns in file order (from the column-set expectation or column kwargs).
    columns: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def by_id(self, expectation_id: str) -> ExpectationSpec:
        for spec in self.expectations:
            if spec.id == expectation_id:
                return spec
        raise KeyError(expectation_id)

    def conform(self, df: pd.DataFrame) -> pd.DataFrame:
        """The accepted frame: declared columns in declared order, extras dropped."""
        if not self.columns:
            return df
        keep = [c for c in self.columns if c in df.columns]
        return df[keep]

    def extra_columns_in(self, df: pd.DataFrame) -> list[str]:
        declared = set(self.columns)
        return [str(c) for c in df.columns if c not in declared] if declared else []

    def to_gx(self, specs: list[ExpectationSpec] | None = None) -> gx.ExpectationSuite:
        """The real GE ExpectationSuite (of all expectations, or of ``specs``)."""
        import great_expectations as gx

        chosen = self.expectations if specs is None else specs
        return gx.ExpectationSuite(
            name=self.name,
            expectations=[s.to_gx_dict() for s in chosen],
            meta=copy.deepcopy(self.meta),
        )


def _declared_columns(specs: list[ExpectationSpec]) -> tuple[str, ...]:
    for spec in specs:
        if spec.type in (
            "expect_table_columns_to_match_set",
            "expect_table_columns_to_match_ordered_list",
        ):
            cols = spec.kwargs.get("column_set") or spec.kwargs.get("column_list") or []
            return tuple(str(c) for c in cols)
    seen: dict[str, None] = {}
    for spec in specs:
        if spec.column is not None:
            seen.setdefault(spec.column, None)
    return tuple(seen)


def suite_from_dict(raw: dict[str, Any], *, source: str = "<dict>") -> Suite:
    """Build a :class:`Suite` from the parsed file; :class:`SuiteError` names what is wrong."""
    if not isinstance(raw, dict):
        raise SuiteError(f"{source}: the suite must be a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SuiteError(f"{source}: the suite needs a non-empty 'name'")
    items = raw.get("expectations")
    if not isinstance(items, list) or not items:
        raise SuiteError(f"{source}: 'expectations' must be a non-empty list")
    meta = raw.get("meta") or {}
    policy = dict(meta.get("mlcicd") or {})
    extra = str(policy.get("extra_columns", "warn")).lower()
    if extra not in EXTRA_COLUMN_POLICIES:
        raise SuiteError(
            f"{source}: meta.mlcicd.extra_columns must be one of {EXTRA_COLUMN_POLICIES}, "
            f"got {extra!r}"
        )
    specs: list[ExpectationSpec] = []
    for i, item in enumerate(items):
        where = f"{source}: expectations[{i}]"
        if not isinstance(item, dict):
            raise SuiteError(f"{where} must be a mapping")
        etype = item.get("type") or item.get("expectation_type")
        if not isinstance(etype, str) or not etype.startswith("expect_"):
            raise SuiteError(f"{where}: 'type' must name a GE expectation, got {etype!r}")
        kwargs = item.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise SuiteError(f"{where}: 'kwargs' must be a mapping")
        sev_raw = str(item.get("severity", "critical")).lower()
        if sev_raw not in _SEVERITY_ALIASES:
            raise SuiteError(
                f"{where}: severity {sev_raw!r} is not one of critical|warning|info (or ERROR|WARN)"
            )
        item_meta = dict(item.get("meta") or {})
        col = kwargs.get("column")
        default_id = f"{i:03d}-{etype.removeprefix('expect_')}" + (f"-{col}" if col else "")
        specs.append(
            ExpectationSpec(
                type=etype,
                kwargs=dict(kwargs),
                severity=_SEVERITY_ALIASES[sev_raw],
                meta=item_meta,
                id=str(item_meta.get("mlcicd_id") or default_id),
            )
        )
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"{source}: expectation ids (meta.mlcicd_id) must be unique")
    columns = _declared_columns(specs)
    if extra != "ignore" and columns:
        specs.append(
            ExpectationSpec(
                type="expect_table_columns_to_match_set",
                kwargs={"column_set": list(columns), "exact_match": True},
                severity="critical" if extra == "error" else "warning",
                meta={"why": f"extra_columns policy '{extra}' (meta.mlcicd.extra_columns)"},
                id=EXTRA_COLUMNS_ID,
            )
        )
    label = policy.get("label")
    id_column = policy.get("id_column")
    return Suite(
        name=name,
        expectations=tuple(specs),
        extra_columns=extra,
        label=None if label is None else str(label),
        id_column=None if id_column is None else str(id_column),
        columns=columns,
        meta=dict(meta),
    )


def load_suite(path: Path) -> Suite:
    """Read a suite file (``.yaml``/``.yml``/``.json``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(f"cannot read suite file {path}: {exc}") from exc
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yamlio.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SuiteError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {exc}") from exc
    return suite_from_dict(raw, source=str(path))
