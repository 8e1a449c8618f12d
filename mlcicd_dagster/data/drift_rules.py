"""The pipeline's drift rules (the suite's ``meta.mlcicd.drift``), checked when the code
location loads. Kept apart from :mod:`mlcicd_dagster.data.drift` (numpy, pandas), which
only a data-gate step needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: PSI of 0.1 is the usual "some change worth a look" threshold (0.25 = major shift).
DEFAULT_PSI_FLOOR = 0.1
#: Smallest change of a class proportion of the label worth an alarm.
DEFAULT_LABEL_FLOOR = 0.05
#: Fewer current rows than this: the feature is reported but not tested.
DEFAULT_MIN_ROWS = 30


# ---------------------------------------------------------------------------
# the pipeline's drift rules (the suite's ``meta.mlcicd.drift``)
# ---------------------------------------------------------------------------
_RULE_KEYS = {"block_on", "alpha", "correction", "psi_floor", "label_floor", "min_rows"}


@dataclass(frozen=True)
class DriftRules:
    """How a batch's drift is judged, from the suite's ``meta.mlcicd.drift``::

        meta:
          mlcicd:
            drift:
              block_on: [default.payment.next.month]   # drift here rejects the batch
              alpha: 0.01                              # family-wise, Holm
              psi_floor: 0.1

    Drift in a column named in ``block_on`` rejects (quarantines) the batch; any other
    drift is a warning on the batch's partition.
    """

    block_on: tuple[str, ...] = ()
    alpha: float = 0.05
    correction: str = "holm"
    psi_floor: float = DEFAULT_PSI_FLOOR
    label_floor: float = DEFAULT_LABEL_FLOOR
    min_rows: int = DEFAULT_MIN_ROWS

    def compare_kwargs(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "correction": self.correction,
            "psi_floor": self.psi_floor,
            "label_floor": self.label_floor,
            "min_rows": self.min_rows,
            "block_on": self.block_on,
        }

    @classmethod
    def from_suite_meta(
        cls, meta: dict[str, Any], *, columns: Iterable[str], source: str = "suite"
    ) -> DriftRules:
        """Rules from a suite's ``meta``; ``ValueError`` names a bad key or column."""
        raw = ((meta or {}).get("mlcicd") or {}).get("drift") or {}
        where = f"{source}: meta.mlcicd.drift"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be a mapping")
        unknown = sorted(set(raw) - _RULE_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
        block_on = raw.get("block_on") or []
        if isinstance(block_on, str) or not isinstance(block_on, list):
            raise ValueError(f"{where}.block_on must be a list of column names")
        known = set(columns)
        missing = [c for c in block_on if c not in known]
        if missing:
            raise ValueError(
                f"{where}.block_on names column(s) the drift check does not test: "
                f"{', '.join(map(str, missing))} (known: {', '.join(sorted(known))})"
            )
        try:
            rules = cls(
                block_on=tuple(str(c) for c in block_on),
                alpha=float(raw.get("alpha", 0.05)),
                correction=str(raw.get("correction", "holm")),
                psi_floor=float(raw.get("psi_floor", DEFAULT_PSI_FLOOR)),
                label_floor=float(raw.get("label_floor", DEFAULT_LABEL_FLOOR)),
                min_rows=int(raw.get("min_rows", DEFAULT_MIN_ROWS)),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if not 0 < rules.alpha < 1:
            raise ValueError(f"{where}.alpha must be in (0, 1), got {rules.alpha}")
        if rules.correction not in ("holm", "bh", "none"):
            raise ValueError(f"{where}.correction must be holm, bh or none")
        return rules
