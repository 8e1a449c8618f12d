"""mlcicd-dagster."""
