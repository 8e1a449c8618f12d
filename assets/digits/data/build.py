"""Rebuild this folder's files from scikit-learn's bundled digits (no download):
``python assets/digits/data/build.py``. Deterministic (fixed seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
GOLDEN_ROWS = 360


def main() -> None:
    from sklearn.datasets import load_digits

    d = load_digits(as_frame=True)
    frame = d.frame.rename(columns={"target": "digit"})
    frame.insert(0, "image_id", [f"img-{i:04d}" for i in range(len(frame))])
    rng = np.random.default_rng(11)
    order = rng.permutation(len(frame))
    golden = frame.iloc[np.sort(order[:GOLDEN_ROWS])]
    pool = frame.iloc[np.sort(order[GOLDEN_ROWS:])]
    golden.to_csv(HERE / "golden.csv.gz", index=False)
    pool.to_csv(HERE / "pool.csv.gz", index=False)


if __name__ == "__main__":
    main()
