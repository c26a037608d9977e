"""kopf handler registration. The logic lives in :mod:`.reconcile` and :mod:`.planning`.

* startup: connect to NATS (worker heartbeats) and build the API client;
* an index of every worker pod by pool, fed by kopf's pod watch;
* a timer per AgentPool that reconciles it and patches its status.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from voxmesh.config import load_settings
from voxmesh_operator.heartbeats import HeartbeatRegistry, WorkerChannel
from voxmesh_operator.kube import KubeClient
from voxmesh_operator.pods import GROUP, POOL_LABEL, VERSION
from voxmesh_operator.reconcile import Operator, reconcile_pool
from voxmesh_operator.settings import OperatorSettings

SETTINGS = load_settings(OperatorSettings)


def _login(**kwargs: Any) -> kopf.ConnectionInfo:
    """In-cluster service account first, then KUBECONFIG / ~/.kube/config."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        raise kopf.LoginError("no service account token and no kubeconfig found")
    return info


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo:
    """Logs kopf in the way the operator's own client logs in."""
    return _login(**kwargs)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Connects to NATS and prepares the API client."""
    settings.posting.level = logging.INFO
    registry = HeartbeatRegistry(stale_after_s=SETTINGS.heartbeat_stale_s)
    channel = WorkerChannel(registry)
    try:
        await channel.connect(SETTINGS.nats_url)
    except (OSError, TimeoutError) as error:
        raise kopf.TemporaryError(f"NATS at {SETTINGS.nats_url} unreachable: {error}",
                                  delay=5) from error
    memo.operator = Operator(client=KubeClient(lambda: _login(settings=settings)),
                             channel=channel, registry=registry)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Closes NATS and the API client."""
    operator: Operator | None = memo.get("operator")
    if operator is not None:
        await operator.channel.close()
        await operator.client.close()


@kopf.index("pods", labels={POOL_LABEL: kopf.PRESENT})
def pool_pods(namespace: str | None, labels: kopf.Labels, body: kopf.Body,
              **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Every worker pod, by (namespace, pool)."""
    return {(namespace or "", labels[POOL_LABEL]): {
        "metadata": dict(body.metadata), "status": dict(body.status)}}


@kopf.timer(GROUP, VERSION, "agentpools", interval=SETTINGS.reconcile_interval_s,
            initial_delay=0)
async def reconcile(body: kopf.Body, namespace: str | None, name: str, memo: Any,
                    patch: kopf.Patch, logger: logging.Logger | logging.LoggerAdapter[Any],
                    **kwargs: Any) -> None:
    """Reconciles one pool; its status is patched (a merge patch), never replaced."""
    operator: Operator = memo.operator
    index: kopf.Index[tuple[str, str], dict[str, Any]] = kwargs["pool_pods"]
    pods: kopf.Store[dict[str, Any]] | list[dict[str, Any]] = index.get((namespace or "", name), [])
    result = await reconcile_pool(operator, body, pods, logger)
    patch.status.update(result.status)
    if result.errors:
        raise kopf.TemporaryError(f"{len(result.errors)} API call(s) failed: "
                                  f"{result.errors[0]}", delay=2)
