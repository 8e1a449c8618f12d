"""Where traffic is moved: deployment state, deploy targets, strategies, canary analysis."""
