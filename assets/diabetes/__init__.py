"""diabetes: a regression pipeline on a small data set (defs.yaml)."""
