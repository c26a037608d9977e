"""One reconcile of one pool: observe, plan (pure), apply, report.

Applying is idempotent: drains and deletes can be repeated, creations are remembered until the
pod shows up in the watch-fed index (the "expectations" of Kubernetes' own controllers), so a
reconcile that runs before the watch catches up never creates a pod twice.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from voxmesh_operator import instruments
from voxmesh_operator import pods as manifests
from voxmesh_operator.heartbeats import HeartbeatRegistry, WorkerChannel
from voxmesh_operator.kube import (
    STRATEGIC_MERGE_PATCH,
    ApiError,
    KubeClient,
    pdbs_path,
    pods_path,
)
from voxmesh_operator.planning import WorkerState, WorkerView, plan_pool
from voxmesh_operator.spec import InvalidSpecError, PoolSpec
from voxmesh_operator.status import pool_status

log = logging.getLogger("voxmesh.operator")

#: How long a created pod is counted before the watch reports it (then it is in the index).
EXPECTATION_TTL_S = 60.0


@dataclass
class Expectations:
    """Pods this operator created that the pod index may not show yet."""

    created: dict[str, dict[str, float]] = field(default_factory=dict)

    def expect(self, pool: str, name: str, now: float) -> None:
        """Remembers a pod created for ``pool``."""
        self.created.setdefault(pool, {})[name] = now

    def pending(self, pool: str, seen: Iterable[str], now: float) -> list[str]:
        """Pods created for ``pool`` and not seen yet; forgets the seen and the expired."""
        names = self.created.get(pool, {})
        for name in set(seen) & names.keys():
            del names[name]
        for name, at in list(names.items()):
            if now - at > EXPECTATION_TTL_S:
                del names[name]
        return list(names)


@dataclass
class Operator:
    """Everything a reconcile needs, created once at startup."""

    client: KubeClient
    channel: WorkerChannel
    registry: HeartbeatRegistry
    expectations: Expectations = field(default_factory=Expectations)
    budgets: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Reconciled:
    """The outcome of one reconcile.

    Attributes:
        status: The pool's new status (patched even when some actions failed).
        errors: API calls that failed; the next reconcile retries them.
    """

    status: dict[str, Any]
    errors: tuple[str, ...]


async def reconcile_pool(
    operator: Operator,
    body: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    logger: logging.Logger | logging.LoggerAdapter[Any] = log,
) -> Reconciled:
    """Brings a pool one step closer to its spec.

    Args:
        operator: Clients and operator-wide state.
        body: The AgentPool object.
        pods: The pool's pods, from the watch-fed index.
        logger: Where to log (kopf's per-object logger posts events too).

    Returns:
        The new status, and the API calls that failed (each is retried next time).

    Raises:
        kopf.PermanentError: The spec cannot be acted on (the message names the field).
    """
    meta, raw_spec = body["metadata"], body.get("spec") or {}
    namespace, name = meta["namespace"], meta["name"]
    key = f"{namespace}/{name}"
    try:
        spec = PoolSpec.from_resource(raw_spec)
    except InvalidSpecError as error:
        raise kopf.PermanentError(f"invalid AgentPool spec: {error}") from error
    template = raw_spec.get("template") or {}
    if not (template.get("spec") or {}).get("containers"):
        raise kopf.PermanentError("invalid AgentPool spec: template.spec.containers is empty")
    hash_ = manifests.template_hash(template)
    wall, mono = time.time(), time.monotonic()
    labels = {"pool": key}
    now_iso = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    by_name = {pod["metadata"]["name"]: pod for pod in pods}
    workers = [manifests.worker_view(pod, *operator.registry.state_of(pod_name, mono))
               for pod_name, pod in by_name.items()]
    workers += [WorkerView(pod_name, hash_, WorkerState.WARMING, created_at=wall)
                for pod_name in operator.expectations.pending(key, by_name, mono)]
    previous = body.get("status") or {}
    plan = plan_pool(spec, hash_, workers, wall, surplus_since=previous.get("surplusSince"))
    errors: list[str] = []

    async def attempt(what: str, call: Any) -> bool:
        try:
            await call
        except ApiError as error:
            instruments.API_ERRORS.add(1, labels)
            errors.append(f"{what}: {error}")
            logger.warning("%s failed: %s", what, error)
            return False
        return True

    if key not in operator.budgets and await attempt(
            "create PodDisruptionBudget", _ensure_budget(operator.client, body)):
        operator.budgets.add(key)
    for pod_name in plan.drain:
        if await attempt(f"mark {pod_name} draining", operator.client.patch(
                pods_path(namespace, pod_name), manifests.drain_patch(wall))):
            instruments.DRAINS.add(1, labels)
            logger.info("draining %s: it finishes its calls on the old template", pod_name)
    for worker in workers:
        # Re-sent until the worker reports draining: a request may be lost, repeating is safe.
        if worker.name in plan.drain or (worker.drain_requested_at is not None
                                          and worker.state is not WorkerState.DRAINING):
            await operator.channel.request_drain(worker.name)
    for pod_name, reason in plan.delete:
        if await attempt(f"delete {pod_name}", operator.client.delete(
                pods_path(namespace, pod_name))):
            instruments.PODS_DELETED.add(
                1, {**labels, "reason": instruments.deletion_reason(reason)})
            logger.info("deleted %s: %s", pod_name, reason)
    for _ in range(plan.create):
        pod = manifests.worker_pod(body, spec, template, hash_)
        pod_name = pod["metadata"]["name"]
        if await attempt(f"create {pod_name}", operator.client.create(
                pods_path(namespace), pod)):
            operator.expectations.expect(key, pod_name, mono)
            instruments.PODS_CREATED.add(1, labels)
    if plan.create:
        logger.info("created %d worker(s) (busy %d, desired %d)", plan.create, plan.busy,
                    plan.desired)

    deleted = plan.deleted_names
    for worker in workers:
        existing = by_name.get(worker.name)
        if existing is None or worker.name in deleted or worker.terminating:
            continue
        if worker.name in plan.drain:
            worker = dataclasses.replace(worker, drain_requested_at=wall)
        mirror = manifests.mirror_patch(existing, worker)
        if mirror is not None:
            await attempt(f"label {worker.name}", operator.client.patch(
                pods_path(namespace, worker.name), mirror))
        warm = not worker.draining and worker.state in (WorkerState.IDLE, WorkerState.BUSY)
        ready = manifests.readiness_patch(existing, warm, now_iso)
        if ready is not None:
            await attempt(f"set readiness of {worker.name}", operator.client.patch(
                pods_path(namespace, worker.name) + "/status", ready, STRATEGIC_MERGE_PATCH))

    status = pool_status(name=name, generation=int(meta.get("generation") or 0), spec=spec,
                         template_hash=hash_, workers=workers, plan=plan,
                         previous=previous, now_iso=now_iso,
                         error="; ".join(errors))
    instruments.record_status(key, status)
    instruments.RECONCILE.record((time.monotonic() - mono) * 1000, labels)
    return Reconciled(status, tuple(errors))


async def _ensure_budget(client: KubeClient, body: Mapping[str, Any]) -> None:
    budget = manifests.disruption_budget(body)
    try:
        await client.create(pdbs_path(body["metadata"]["namespace"]), budget)
    except ApiError as error:
        if error.status != 409:  # AlreadyExists: an earlier run made it
            raise
