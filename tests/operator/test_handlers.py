"""The operator's kopf handlers against kmock (a Kubernetes API emulator), with real NATS.

The operator runs in-process exactly as ``voxmesh-operator run`` registers it; the test plays
the workers, publishing their heartbeats on a real nats-server, and reads what the operator
did from the emulator's objects and its log of API requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import nats
import pytest
import pytest_asyncio
from kube_emulator import ApiServerLikeEmulator
from nats.aio.client import Client as NatsClient

from voxmesh import subjects
from voxmesh.v1 import session_pb2
from voxmesh_subagents.local import NatsServer

os.environ["VOXMESH_OPERATOR_RECONCILE_INTERVAL_S"] = "0.25"
from voxmesh_operator import main as handlers  # noqa: E402 - reads the interval above
from voxmesh_operator import pods as manifests  # noqa: E402

pytestmark = [pytest.mark.kmock(cls=ApiServerLikeEmulator),
              pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]

NS = "voxmesh"
POOLS = "voxmesh.dev/v1alpha1/agentpools"
POOLS_PATH = f"/apis/voxmesh.dev/v1alpha1/namespaces/{NS}/agentpools"
# The test's own requests must not keep connections open: kopf waits for every task started
# after it, the emulator's connection handlers included, when it stops.
CLOSE = {"Connection": "close"}


def _template(image: str = "ghcr.io/voxmesh/worker:0.1.0") -> dict[str, Any]:
    return {"metadata": {"labels": {"app.kubernetes.io/name": "voxmesh-worker"}},
            "spec": {"containers": [{"name": "worker", "image": image}]}}


@pytest_asyncio.fixture()
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    server = NatsServer(tmp_path / "nats")
    await server.start()
    yield server.url
    await server.stop()


@contextlib.asynccontextmanager
async def _operator(emulator: kmock.KubernetesEmulator, nats_url: str, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Runs the operator against the emulator.

    Used inside the test itself, not as a fixture: at shutdown kopf cancels every task that
    started after it did, and pytest runs fixture teardowns in tasks of their own.
    """
    emulator.resources.load_bundled()
    emulator.resources[POOLS] = kmock_resource()
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": str(emulator.url)}}],
        "users": [{"name": "emulator", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "emulator",
                      "context": {"cluster": "emulator", "user": "emulator"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.setattr(handlers.SETTINGS, "nats_url", nats_url)
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.posting.enabled = False  # kopf's Events use generateName, which kmock lacks
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(kopf.operator(settings=settings, namespaces=[NS],
                                             stop_flag=stop, ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), timeout=10)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


def kmock_resource() -> kmock.ResourceInfo:
    return kmock.ResourceInfo(kind="AgentPool", singular="agentpool", namespaced=True,
                              verbs={"get", "list", "watch", "create", "update", "patch",
                                     "delete"}, subresources={"status"})


@contextlib.asynccontextmanager
async def _cluster(emulator: kmock.KubernetesEmulator, nats_url: str, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[NatsClient]:
    """The operator running, and a NATS connection the test speaks for the workers on.

    The connection opens first: kopf would take its reader tasks for its own and cancel them.
    """
    nc = await nats.connect(nats_url)
    try:
        async with _operator(emulator, nats_url, tmp_path, monkeypatch):
            yield nc
    finally:
        await nc.close()


async def _beat(nc: NatsClient, worker: str, state: str, sessions: int = 0) -> None:
    beat = session_pb2.WorkerHeartbeat(worker_id=worker, state=state,
                                       active_sessions=sessions, max_sessions=1)
    await nc.publish(subjects.heartbeat(worker), beat.SerializeToString())
    await nc.flush()


async def _create_pool(emulator: kmock.KubernetesEmulator, spec: dict[str, Any]) -> None:
    response = await emulator.post(POOLS_PATH, headers=CLOSE, json={
        "apiVersion": "voxmesh.dev/v1alpha1", "kind": "AgentPool",
        "metadata": {"name": "host", "namespace": NS}, "spec": spec})
    assert response.status in (200, 201)


def _pods(emulator: kmock.KubernetesEmulator) -> dict[str, Any]:
    return {name: obj for (resource, namespace, name), obj in emulator.objects.items()
            if resource == "v1/pods" and namespace == NS and not obj.deleted}


def _status(emulator: kmock.KubernetesEmulator) -> dict[str, Any]:
    return emulator.objects[POOLS, NS, "host"].get("status") or {}


async def _until(predicate: Callable[[], Any], within_s: float = 10) -> Any:
    """Polls ``predicate`` until it is truthy: the emulator's state has no change events."""
    async with asyncio.timeout(within_s):
        while not (result := predicate()):  # noqa: ASYNC110 - nothing to wait on but polling
            await asyncio.sleep(0.05)
    return result


def _deleted(emulator: kmock.KubernetesEmulator, name: str) -> bool:
    return any(r.method == kmock.method.DELETE and r.name == name
               for r in emulator[kmock.resource("v1/pods")])


async def test_a_new_pool_gets_its_pods_budget_and_status(
        kmock: kmock.KubernetesEmulator, nats_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with _cluster(kmock, nats_url, tmp_path, monkeypatch) as workers:
        await _new_pool(kmock, workers)


async def _new_pool(operator: kmock.KubernetesEmulator, workers: NatsClient) -> None:
    await _create_pool(operator, {"minReplicas": 2, "maxReplicas": 5, "buffer": 2,
                                  "drainTimeoutSeconds": 60, "template": _template()})
    pods = await _until(lambda: len(_pods(operator)) == 2 and _pods(operator))
    pool_uid = operator.objects[POOLS, NS, "host"]["metadata"]["uid"]
    for pod in pods.values():
        assert pod["metadata"]["labels"][manifests.POOL_LABEL] == "host"
        assert pod["metadata"]["ownerReferences"][0]["uid"] == pool_uid
        assert pod["spec"]["readinessGates"] == [{"conditionType": "voxmesh.dev/warm"}]
        assert pod["spec"]["terminationGracePeriodSeconds"] == 90
    budget = operator.objects["policy/v1/poddisruptionbudgets", NS, "host-calls"]
    assert budget["spec"]["maxUnavailable"] == 0
    await _until(lambda: _status(operator).get("workers", {}).get("warming") == 2)
    assert _status(operator)["observedGeneration"] == 1

    # Warm workers: the pods turn Ready through the readiness gate, the pool reports them.
    for name in pods:
        await _beat(workers, name, "idle")
    await _until(lambda: _status(operator).get("workers", {}).get("idle") == 2)
    await _until(lambda: all(p["metadata"]["labels"][manifests.STATE_LABEL] == "idle"
                             for p in _pods(operator).values()))
    readiness = [r for r in operator[kmock.resource("v1/pods"), kmock.subresource("status")]]
    assert readiness and all(r.headers["Content-Type"] ==
                             "application/strategic-merge-patch+json" for r in readiness)
    assert {c["type"]: c["status"] for c in readiness[-1].data["status"]["conditions"]} == {
        "voxmesh.dev/warm": "True"}
    ready = {c["type"]: c["status"] for c in _status(operator)["conditions"]}
    assert ready["Ready"] == "True"

    # A call lands on one: it is protected from eviction, and a spare one is added (busy 1 +
    # buffer 2).
    busy = sorted(pods)[0]
    await _beat(workers, busy, "busy", 1)
    await _until(lambda: len(_pods(operator)) == 3)
    meta = await _until(lambda: _pods(operator)[busy]["metadata"]["labels"].get(
        manifests.STATE_LABEL) == "busy" and _pods(operator)[busy]["metadata"])
    assert meta["labels"][manifests.PROTECTED_LABEL] == "true"
    assert meta["annotations"][manifests.SAFE_TO_EVICT] == "false"

    # The status is always patched through /status, never replaced.
    writes = [r for r in operator[kmock.resource(POOLS), kmock.subresource("status")]
              if r.method != kmock.method.GET]
    assert writes and all(r.method == kmock.method.PATCH for r in writes)
    assert all(r.headers["Content-Type"] == "application/merge-patch+json" for r in writes)
    assert not list(operator["put"])


async def test_a_template_change_rolls_without_deleting_busy_pods(
        kmock: kmock.KubernetesEmulator, nats_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with _cluster(kmock, nats_url, tmp_path, monkeypatch) as workers:
        await _rollout(kmock, workers)


async def _rollout(operator: kmock.KubernetesEmulator, workers: NatsClient) -> None:
    drains: list[str] = []

    async def on_drain(msg: Any) -> None:
        drains.append(msg.subject.split(".")[2])

    await workers.subscribe(subjects.DRAIN.format(worker="*"), cb=on_drain)
    await _create_pool(operator, {"minReplicas": 2, "maxReplicas": 5, "buffer": 1,
                                  "drainTimeoutSeconds": 600, "template": _template()})
    old = sorted(await _until(lambda: len(_pods(operator)) == 2 and _pods(operator)))
    busy, idle = old
    await _beat(workers, busy, "busy", 1)
    await _beat(workers, idle, "idle")
    await _until(lambda: _status(operator).get("workers", {}).get("busy") == 1)

    response = await operator.patch(f"{POOLS_PATH}/host", headers={
        **CLOSE, "Content-Type": "application/merge-patch+json"},
        json={"spec": {"template": _template("ghcr.io/voxmesh/worker:0.2.0")}})
    assert response.status == 200
    # The busy worker is asked to drain (annotation, label, NATS request); new pods surge.
    await _until(lambda: busy in drains)
    await _until(lambda: manifests.DRAIN_ANNOTATION in
                 _pods(operator)[busy]["metadata"].get("annotations", {}))
    new = await _until(lambda: [n for n in _pods(operator) if n not in old] or None)
    await _until(lambda: _pods(operator)[busy]["metadata"]["labels"][manifests.STATE_LABEL]
                 == "draining")
    assert not _deleted(operator, idle), "the old idle worker went before a new one was warm"

    await _beat(workers, busy, "draining", 1)
    new = await _until(lambda: len([n for n in _pods(operator) if n not in old]) >= 2
                       and [n for n in _pods(operator) if n not in old])
    for name in new:
        await _beat(workers, name, "idle")
    await _until(lambda: _deleted(operator, idle))
    await asyncio.sleep(1.0)  # four reconciles: the draining worker still has its call
    assert not _deleted(operator, busy), "a busy worker was deleted"

    await _beat(workers, busy, "draining", 0)  # its call ended
    await _until(lambda: _deleted(operator, busy))
    status = await _until(lambda: _status(operator).get("workers", {}).get("draining") == 0
                          and _status(operator))
    assert status["templateHash"] == manifests.template_hash(
        _template("ghcr.io/voxmesh/worker:0.2.0"))


async def test_an_unusable_spec_is_a_permanent_error_with_the_field_named(
        kmock: kmock.KubernetesEmulator, nats_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    async with _cluster(kmock, nats_url, tmp_path, monkeypatch):
        await _create_pool(kmock, {"minReplicas": 1,
                                   "template": {"spec": {"containers": []}}})
        await _until(lambda: "template.spec.containers is empty" in caplog.text)
        await asyncio.sleep(0.6)
        assert _pods(kmock) == {}
