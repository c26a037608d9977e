"""Worker pods and the pool's disruption budget, as Kubernetes manifests.

A worker pod is the pool's template plus what the operator guarantees:

* labels naming the pool, the template hash and the worker's state (mirrored from heartbeats);
* the readiness gate ``voxmesh.dev/warm``: the pod is Ready only once the worker reports
  warm (models connected, dispatch subscription active), not when the process starts;
* ``terminationGracePeriodSeconds`` = drain timeout + margin, so SIGTERM drains calls;
* ``restartPolicy: Never``: a worker that exits is replaced by the operator, never restarted in
  place with stale state;
* its worker id (the pod name), capacity and drain timeout in the worker's environment.

Busy and draining pods carry ``voxmesh.dev/protected=true`` and
``cluster-autoscaler.kubernetes.io/safe-to-evict=false``; the pool's PodDisruptionBudget
selects protected pods with ``maxUnavailable: 0``, so node drains wait for their calls.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from voxmesh_operator.planning import PodPhase, WorkerState, WorkerView
from voxmesh_operator.spec import PoolSpec

GROUP = "voxmesh.dev"
VERSION = "v1alpha1"
POOL_LABEL = f"{GROUP}/pool"
TEMPLATE_LABEL = f"{GROUP}/template-hash"
STATE_LABEL = f"{GROUP}/state"
PROTECTED_LABEL = f"{GROUP}/protected"
DRAIN_ANNOTATION = f"{GROUP}/drain-requested-at"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
WARM_CONDITION = f"{GROUP}/warm"
#: The container that gets the worker environment when the template has several.
WORKER_CONTAINER = "worker"

Manifest = dict[str, Any]


def template_hash(template: Mapping[str, Any]) -> str:
    """A short, stable hash of a pod template (key order does not matter)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def worker_pod(pool: Mapping[str, Any], spec: PoolSpec, template: Mapping[str, Any],
               hash_: str) -> Manifest:
    """The manifest of a new worker pod of ``pool``.

    Args:
        pool: The AgentPool object (``metadata`` is used for name, namespace and uid).
        spec: Its parsed spec.
        template: Its ``spec.template`` (a PodTemplateSpec).
        hash_: :func:`template_hash` of ``template``.
    """
    meta = pool["metadata"]
    name = f"{meta['name']}-{hash_[:5]}-{secrets.token_hex(3)}"
    template_meta = template.get("metadata") or {}
    pod_spec: Manifest = copy.deepcopy(dict(template.get("spec") or {}))
    pod_spec["restartPolicy"] = "Never"
    pod_spec["terminationGracePeriodSeconds"] = spec.termination_grace_s
    gates = [g for g in pod_spec.get("readinessGates", [])
             if g.get("conditionType") != WARM_CONDITION]
    pod_spec["readinessGates"] = [*gates, {"conditionType": WARM_CONDITION}]
    containers = pod_spec.get("containers") or []
    if containers:
        target = next((c for c in containers if c.get("name") == WORKER_CONTAINER),
                      containers[0])
        target["env"] = _worker_env(target.get("env") or [], spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": {**(template_meta.get("labels") or {}), POOL_LABEL: meta["name"],
                       TEMPLATE_LABEL: hash_, STATE_LABEL: WorkerState.WARMING.value},
            "annotations": {**(template_meta.get("annotations") or {}), SAFE_TO_EVICT: "true"},
            "ownerReferences": [_owner(pool)],
        },
        "spec": pod_spec,
    }


def _worker_env(env: list[Manifest], spec: PoolSpec) -> list[Manifest]:
    ours: list[Manifest] = [
        {"name": "VOXMESH_WORKER_WORKER_ID",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "VOXMESH_WORKER_MAX_SESSIONS", "value": str(spec.max_sessions_per_worker)},
        {"name": "VOXMESH_WORKER_DRAIN_TIMEOUT_S", "value": str(spec.drain_timeout_s)},
    ]
    names = {item["name"] for item in ours}
    return [item for item in env if item.get("name") not in names] + ours


def _owner(pool: Mapping[str, Any]) -> Manifest:
    meta = pool["metadata"]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentPool", "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def disruption_budget(pool: Mapping[str, Any]) -> Manifest:
    """A PDB that lets no busy or draining worker of ``pool`` be evicted."""
    meta = pool["metadata"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{meta['name']}-calls", "namespace": meta.get("namespace"),
                     "labels": {POOL_LABEL: meta["name"]}, "ownerReferences": [_owner(pool)]},
        "spec": {
            "maxUnavailable": 0,
            "selector": {"matchLabels": {POOL_LABEL: meta["name"], PROTECTED_LABEL: "true"}},
        },
    }


def worker_view(pod: Mapping[str, Any], state: WorkerState, sessions: int) -> WorkerView:
    """The planner's view of a pod, given the state its heartbeats report."""
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    drain = annotations.get(DRAIN_ANNOTATION)
    try:
        phase = PodPhase((pod.get("status") or {}).get("phase") or "Pending")
    except ValueError:
        phase = PodPhase.UNKNOWN
    return WorkerView(
        name=meta["name"],
        template_hash=labels.get(TEMPLATE_LABEL, ""),
        state=state,
        sessions=sessions,
        created_at=_timestamp(meta.get("creationTimestamp")),
        drain_requested_at=float(drain) if drain else None,
        phase=phase,
        terminating=bool(meta.get("deletionTimestamp")),
    )


def _timestamp(value: str | None) -> float:
    if not value:
        return 0.0
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def mirror_patch(pod: Mapping[str, Any], worker: WorkerView) -> Manifest | None:
    """The metadata patch that mirrors ``worker``'s state onto its pod, or None if in sync."""
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    state = WorkerState.DRAINING if worker.draining else worker.state
    protected = "true" if worker.draining or worker.has_calls else None
    want_labels = {STATE_LABEL: state.value, PROTECTED_LABEL: protected}
    want_annotations = {SAFE_TO_EVICT: "false" if protected else "true"}
    label_changes = {k: v for k, v in want_labels.items() if labels.get(k) != v}
    annotation_changes = {k: v for k, v in want_annotations.items() if annotations.get(k) != v}
    if not label_changes and not annotation_changes:
        return None
    patch: Manifest = {"metadata": {}}
    if label_changes:
        patch["metadata"]["labels"] = label_changes
    if annotation_changes:
        patch["metadata"]["annotations"] = annotation_changes
    return patch


def drain_patch(now: float) -> Manifest:
    """Marks a pod as asked to drain (kept on the pod so an operator restart remembers)."""
    return {"metadata": {"annotations": {DRAIN_ANNOTATION: f"{now:.3f}"}}}


def readiness_patch(pod: Mapping[str, Any], warm: bool, now_iso: str) -> Manifest | None:
    """The status patch that sets the ``voxmesh.dev/warm`` condition, or None if in sync."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    want = "True" if warm else "False"
    current = next((c for c in conditions if c.get("type") == WARM_CONDITION), None)
    if current is not None and current.get("status") == want:
        return None
    return {"status": {"conditions": [{
        "type": WARM_CONDITION, "status": want, "lastTransitionTime": now_iso,
        "reason": "WorkerWarm" if warm else "WorkerNotWarm",
        "message": "the worker reports models connected and dispatch active" if warm else
        "the worker is warming, draining or silent",
    }]}}
