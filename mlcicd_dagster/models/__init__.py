"""Where models are made and judged: trainers, MLflow tracking and registry, gates, cards."""
