"""Light declarations of the deploy step, importable when the code location loads."""

from __future__ import annotations

import dagster as dg

# The checks on ``deployment``, one per kind of rollout decision.
DECISION_CHECKS: dict[str, str] = {
    "smoke": "The new track answered golden rows exactly as the registered model.",
    "infra": "The new track serves the expected revision and version.",
    "switch": "Traffic switched to the new version (blue-green / promotion).",
    "canary_analysis": "Sequential test (SPRT, anytime-valid) of canary vs stable on live "
    "traffic and feedback: log-loss, errors, latency, prediction shift.",
    "shadow_analysis": "The shadow candidate scored mirrored traffic; its evidence decides.",
    "max_duration": "The rollout decided before its maximum duration.",
    "rollback": "A rollback happened (the previous stable serves again).",
    "resume": "An interrupted rollout was resumed or reverted.",
}


class RolloutConfig(dg.Config):
    """Run config of the deploy job: roll out a named version instead of the last gated one."""

    version: str = ""
    strategy: str = ""  # blue_green | canary | shadow (default: the spec's)
