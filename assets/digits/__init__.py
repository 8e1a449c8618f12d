"""digits: a multiclass image pipeline (defs.yaml) with its own torch module (model.py)."""
