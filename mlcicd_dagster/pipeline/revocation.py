"""Revocable data: take a validated batch out of (or back into) the training data.

One body for the three ways in: ``mlcicd data revoke|restore``, the Dagster job
``<pipeline>_data_revocation`` (launched from the UI with its config), and data
bisect's policy. The lake keeps the batch, marked with who, why and when; the
training sensor sees the new set of batches and asks for a model without it.
"""

from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

from mlcicd_dagster.pipeline.presigned import presigned
from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.platform.resources import MlcicdResource

if TYPE_CHECKING:
    from mlcicd_dagster.pipeline.factory import PipelineDefs
    from mlcicd_dagster.pipeline.spec import PipelineSpec


def current_user() -> str:
    import getpass  # at run time only: the code location imports this module

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def resolve_batch(spec: "PipelineSpec", home: Home, batch: str) -> str:
    """The partition key of ``batch``, given as a partition key or a landed file name."""
    from mlcicd_dagster.data.lake import Lake, RevocationError
    from mlcicd_dagster.data.landing import partition_key_for

    lake = Lake(home.lake(spec.dataset))
    batch = batch.strip()
    if not batch:
        raise RevocationError("no batch given")
    for candidate in (batch, partition_key_for(batch)):
        if lake.has_validated(candidate):
            return candidate
    key = partition_key_for(batch)
    quarantined = home.quarantine(spec.dataset) / f"{batch}.reason.json"
    if quarantined.exists():
        raise RevocationError(
            f"batch {batch!r} of pipeline {spec.dataset!r} was quarantined by the data gate: "
            "it never entered the training data, there is nothing to revoke"
        )
    known = lake.keys()
    listing = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
    raise RevocationError(
        f"no validated batch {batch!r} (partition {key!r}) in pipeline {spec.dataset!r}; "
        + (f"validated batches: {listing}" if known else "its lake has no validated batch yet")
    )


def revoke(
    spec: "PipelineSpec",
    home: Home,
    batch: str,
    *,
    reason: str,
    by: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from mlcicd_dagster.data.lake import Lake
    from mlcicd_dagster.platform.alerts import send_alert

    key = resolve_batch(spec, home, batch)
    mark = Lake(home.lake(spec.dataset)).revoke(
        key, reason=reason, by=by or current_user(), evidence=evidence
    )
    send_alert(
        home,
        "data_revoked",
        f"{spec.dataset}: batch {key} revoked; the next model trains without it",
        {k: mark[k] for k in ("by", "reason", "at", "partition_key")},
    )
    return mark


def restore(
    spec: "PipelineSpec", home: Home, batch: str, *, by: str | None = None, reason: str = ""
) -> dict[str, Any]:
    from mlcicd_dagster.data.lake import Lake
    from mlcicd_dagster.platform.alerts import send_alert

    key = resolve_batch(spec, home, batch)
    event = Lake(home.lake(spec.dataset)).restore(key, by=by or current_user(), reason=reason)
    send_alert(
        home,
        "data_restored",
        f"{spec.dataset}: batch {key} restored; the next model trains on it again",
        {k: event[k] for k in ("by", "reason", "at", "partition_key")},
    )
    return event


def revoked_batches(spec: "PipelineSpec", home: Home) -> list[dict[str, Any]]:
    """For ``mlcicd status``: each revoked batch with who, why and when."""
    from mlcicd_dagster.data.lake import Lake

    return [
        {"batch": key, "by": m.get("by"), "reason": m.get("reason"), "at": m.get("at")}
        for key, m in Lake(home.lake(spec.dataset)).revoked().items()
    ]


class RevocationConfig(dg.Config):
    """What to revoke or restore (the launchpad of the Dagster UI shows these fields)."""

    action: Literal["revoke", "restore"] = Field(default="revoke", description="revoke|restore")
    batch: str = Field(description="partition key or landed file name of a validated batch")
    reason: str = Field(default="", description="why (required to revoke)")
    by: str = Field(default="", description="who (default: this run)")


def build_revocation_job(p: "PipelineDefs") -> dg.JobDefinition:
    spec = p.spec

    @dg.op(
        name=f"{spec.dataset}__revoke_or_restore",
        description="Mark a validated batch revoked (or restore it); the training sensor "
        "then trains the next model without (or with) it.",
    )
    @presigned
    def revoke_or_restore(
        context: dg.OpExecutionContext, config: RevocationConfig, mlcicd: MlcicdResource
    ) -> dg.Output[None]:
        from mlcicd_dagster.data.lake import RevocationError

        by = config.by or f"dagster run {context.run_id[:8]}"
        try:
            if config.action == "revoke":
                done = revoke(spec, mlcicd.home, config.batch, reason=config.reason, by=by)
            else:
                done = restore(spec, mlcicd.home, config.batch, by=by, reason=config.reason)
        except RevocationError as exc:
            raise dg.Failure(description=str(exc)) from None
        context.log.info(f"{config.action}: {done['partition_key']} by {done['by']}")
        return dg.Output(
            None,
            metadata={
                "action": config.action,
                "batch": done["partition_key"],
                "by": done["by"],
                "reason": done.get("reason") or "",
                "at": done["at"],
            },
        )

    @dg.job(
        name=p.job_name("data_revocation"),
        description="Revoke a validated batch from the training data, or restore it "
        "(config: action, batch, reason).",
        tags={"mlcicd/trigger": "data_revocation"},
    )
    @presigned
    def data_revocation() -> None:
        revoke_or_restore()

    return data_revocation
