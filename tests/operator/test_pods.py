"""Worker pod manifests, state mirroring, heartbeat staleness and pool status."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from voxmesh.v1 import session_pb2
from voxmesh_operator import pods
from voxmesh_operator.heartbeats import HeartbeatRegistry
from voxmesh_operator.planning import PoolPlan, WorkerState, WorkerView
from voxmesh_operator.spec import PoolSpec
from voxmesh_operator.status import pool_status

EXAMPLE = Path(__file__).parents[2] / "operator" / "examples" / "restaurant-host-pool.yaml"
K8S_VERSION = "1.31"


@pytest.fixture()
def pool() -> dict:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["uid"] = "0f1e2d3c-aaaa-bbbb-cccc-111122223333"
    return body


def _pod(pool: dict) -> dict:
    spec = PoolSpec.from_resource(pool["spec"])
    template = pool["spec"]["template"]
    return pods.worker_pod(pool, spec, template, pods.template_hash(template))


def test_worker_pod_carries_what_the_operator_guarantees(pool: dict) -> None:
    pod = _pod(pool)
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["labels"][pods.POOL_LABEL] == "restaurant-host"
    assert meta["labels"][pods.STATE_LABEL] == "warming"
    assert meta["labels"]["voxmesh.dev/agent"] == "restaurant-host"  # template labels kept
    assert meta["ownerReferences"][0]["controller"] is True
    assert spec["readinessGates"] == [{"conditionType": "voxmesh.dev/warm"}]
    assert spec["terminationGracePeriodSeconds"] == 600 + 30
    assert spec["restartPolicy"] == "Never"
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["VOXMESH_WORKER_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.name")
    assert env["VOXMESH_WORKER_MAX_SESSIONS"]["value"] == "1"
    assert env["VOXMESH_WORKER_DRAIN_TIMEOUT_S"]["value"] == "600"
    assert env["VOXMESH_NATS_URL"]["value"] == "nats://voxmesh-nats:4222"
    # The template in the pool is not modified by building pods from it.
    assert "readinessGates" not in pool["spec"]["template"]["spec"]


def test_pod_and_budget_are_valid_kubernetes_objects(pool: dict) -> None:
    for manifest in (_pod(pool), pods.disruption_budget(pool)):
        # Raises ValidationError (with the path) on a schema violation or an unknown field.
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    broken = _pod(pool)
    broken["spec"]["terminationGracePeriodSeconds"] = "long"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_template_hash_ignores_key_order_and_changes_with_content(pool: dict) -> None:
    template = pool["spec"]["template"]
    reordered = dict(reversed(list(template.items())))
    assert pods.template_hash(template) == pods.template_hash(reordered)
    changed = yaml.safe_load(yaml.safe_dump(template))
    changed["spec"]["containers"][0]["image"] = "ghcr.io/voxmesh/worker:0.2.0"
    assert pods.template_hash(changed) != pods.template_hash(template)


def test_busy_pods_are_protected_and_idle_ones_are_not(pool: dict) -> None:
    pod = _pod(pool)
    busy = WorkerView(pod["metadata"]["name"], "h", WorkerState.BUSY, sessions=1)
    patch = pods.mirror_patch(pod, busy)
    assert patch == {"metadata": {
        "labels": {pods.STATE_LABEL: "busy", pods.PROTECTED_LABEL: "true"},
        "annotations": {pods.SAFE_TO_EVICT: "false"}}}
    pod["metadata"]["labels"].update(patch["metadata"]["labels"])
    pod["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    assert pods.mirror_patch(pod, busy) is None  # in sync: nothing to send
    idle = WorkerView(busy.name, "h", WorkerState.IDLE)
    # A JSON merge patch removes a label with null.
    assert pods.mirror_patch(pod, idle) == {"metadata": {
        "labels": {pods.STATE_LABEL: "idle", pods.PROTECTED_LABEL: None},
        "annotations": {pods.SAFE_TO_EVICT: "true"}}}
    budget = pods.disruption_budget(pool)
    assert budget["spec"]["maxUnavailable"] == 0
    assert budget["spec"]["selector"]["matchLabels"][pods.PROTECTED_LABEL] == "true"


def test_readiness_condition_is_patched_only_on_change(pool: dict) -> None:
    pod = _pod(pool)
    patch = pods.readiness_patch(pod, True, "2026-11-21T00:00:00Z")
    assert patch is not None
    assert patch["status"]["conditions"][0]["type"] == "voxmesh.dev/warm"
    pod["status"] = {"conditions": [{"type": "Ready", "status": "True"},
                                    *patch["status"]["conditions"]]}
    assert pods.readiness_patch(pod, True, "later") is None
    assert pods.readiness_patch(pod, False, "later")["status"]["conditions"][0][
        "status"] == "False"


def test_a_silent_idle_worker_stops_counting_as_warm_but_a_busy_one_stays_busy() -> None:
    registry = HeartbeatRegistry(stale_after_s=10)
    registry.observe(session_pb2.WorkerHeartbeat(worker_id="a", state="idle"), now=0)
    registry.observe(session_pb2.WorkerHeartbeat(worker_id="b", state="busy",
                                                 active_sessions=1), now=0)
    registry.observe(session_pb2.WorkerHeartbeat(worker_id="c", state="sleeping"), now=0)
    assert registry.state_of("a", now=5) == (WorkerState.IDLE, 0)
    assert registry.state_of("a", now=11) == (WorkerState.WARMING, 0)
    assert registry.state_of("b", now=11) == (WorkerState.BUSY, 1)
    assert registry.state_of("c", now=1) == (WorkerState.WARMING, 0)  # unknown state ignored
    registry.forget_after_s = 60
    registry.prune(now=100)
    assert registry.state_of("b", now=100) == (WorkerState.WARMING, 0)


def test_status_counts_states_and_keeps_transition_times() -> None:
    spec = PoolSpec(min_replicas=0, max_replicas=3)
    workers = [WorkerView("a", "h", WorkerState.BUSY, sessions=1),
               WorkerView("b", "h", WorkerState.IDLE),
               WorkerView("c", "old", WorkerState.BUSY, sessions=1, drain_requested_at=1.0)]
    plan = PoolPlan(desired=2, busy=1, spare_after=1, rolling_out=True)
    first = pool_status(name="p", generation=4, spec=spec, template_hash="h", workers=workers,
                        plan=plan, previous={}, now_iso="t1")
    assert first["workers"] == {"warming": 0, "idle": 1, "busy": 1, "draining": 1}
    assert (first["observedGeneration"], first["replicas"], first["sessions"]) == (4, 3, 2)
    assert first["selector"] == "voxmesh.dev/pool=p"
    conditions = {c["type"]: c for c in first["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "RollingOut"
    second = pool_status(name="p", generation=4, spec=spec, template_hash="h",
                         workers=workers, plan=plan, previous=first, now_iso="t2")
    assert {c["lastTransitionTime"] for c in second["conditions"]} == {"t1"}
