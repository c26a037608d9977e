"""The AgentPool status: worker counts by state, conditions and observed generation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from voxmesh_operator.planning import PoolPlan, WorkerState, WorkerView
from voxmesh_operator.pods import POOL_LABEL
from voxmesh_operator.spec import PoolSpec


def pool_status(
    *,
    name: str,
    generation: int,
    spec: PoolSpec,
    template_hash: str,
    workers: Sequence[WorkerView],
    plan: PoolPlan,
    previous: Mapping[str, Any],
    now_iso: str,
    error: str = "",
) -> dict[str, Any]:
    """The status to patch onto the pool after a reconcile.

    Args:
        name: Pool name (for the ``/scale`` label selector).
        generation: ``metadata.generation`` the status describes.
        spec: The parsed spec.
        template_hash: Hash of the current template.
        workers: The pool's workers, as planned with.
        plan: The plan just applied.
        previous: The status before, so unchanged conditions keep their transition time.
        now_iso: Current time, RFC 3339.
        error: Why the last reconcile failed, if it did.
    """
    live = [w for w in workers if not w.terminating]
    states = Counter(WorkerState.DRAINING if w.draining else w.state for w in live)
    warm_spare = sum(1 for w in live if w.spare and w.state is WorkerState.IDLE)
    needed = max(0, plan.desired - plan.busy)
    outdated = sum(1 for w in live if w.template_hash != template_hash)
    wanted = plan.busy + spec.spare_for(plan.load)
    conditions = [
        _condition("Ready", warm_spare >= needed,
                   "BufferWarm" if warm_spare >= needed else "BufferCold",
                   f"{warm_spare} warm idle worker(s) for a buffer of {needed}"),
        _condition("Progressing", plan.rolling_out or plan.create > 0,
                   "RollingOut" if plan.rolling_out else (
                       "ScalingUp" if plan.create else "Stable"),
                   f"{outdated} worker(s) on an old template" if plan.rolling_out else
                   f"creating {plan.create} worker(s)" if plan.create else "no change underway"),
        _condition("ScalingLimited",
                   wanted > spec.max_replicas,
                   "AtMaxReplicas" if wanted > spec.max_replicas else "WithinLimits",
                   f"busy + buffer wants {wanted} worker(s), maxReplicas is "
                   f"{spec.max_replicas}"),
        _condition("ReconcileFailed", bool(error), "ApiError" if error else "Succeeded",
                   error or "the last reconcile applied its plan"),
    ]
    old = {c.get("type"): c for c in previous.get("conditions") or []}
    for condition in conditions:
        before = old.get(condition["type"])
        condition["lastTransitionTime"] = (
            before["lastTransitionTime"]
            if before and before.get("status") == condition["status"]
            and before.get("lastTransitionTime") else now_iso)
    return {
        "observedGeneration": generation,
        "replicas": len(live),
        "readyReplicas": states[WorkerState.IDLE] + states[WorkerState.BUSY],
        "desiredReplicas": plan.desired,
        "workers": {state.value: states[state] for state in WorkerState},
        "sessions": sum(w.sessions for w in live),
        "capacity": sum(1 for w in live if not w.draining
                        and w.state in (WorkerState.IDLE, WorkerState.BUSY))
        * spec.max_sessions_per_worker,
        "templateHash": template_hash,
        # A merge patch removes the field with None once the surplus is gone.
        "surplusSince": plan.surplus_since,
        "selector": f"{POOL_LABEL}={name}",
        "conditions": conditions,
    }


def _condition(type_: str, status: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if status else "False", "reason": reason,
            "message": message}
