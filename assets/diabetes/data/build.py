"""Rebuild this folder's files from scikit-learn's bundled diabetes data (no download):
``python assets/diabetes/data/build.py``. Deterministic (fixed seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
GOLDEN_ROWS = 110


def main() -> None:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame.rename(
        columns={"target": "progression"}
    )
    frame["sex"] = frame["sex"].astype(int)  # coded 1/2 in the source
    frame.insert(0, "patient_id", [f"p-{i:03d}" for i in range(len(frame))])
    rng = np.random.default_rng(5)
    order = rng.permutation(len(frame))
    golden = frame.iloc[np.sort(order[:GOLDEN_ROWS])]
    pool = frame.iloc[np.sort(order[GOLDEN_ROWS:])]
    golden.to_csv(HERE / "golden.csv.gz", index=False)
    pool.to_csv(HERE / "pool.csv.gz", index=False)


if __name__ == "__main__":
    main()
