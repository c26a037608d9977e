"""Metrics of the operator (Prometheus names in docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from voxmesh.metrics import meter

_meter = meter("operator")

RECONCILE = _meter.create_histogram(
    "voxmesh.operator.reconcile", unit="ms", description="Duration of one pool reconcile")
PODS_CREATED = _meter.create_counter(
    "voxmesh.operator.pods_created", description="Worker pods created (attribute pool)")
PODS_DELETED = _meter.create_counter(
    "voxmesh.operator.pods_deleted",
    description="Worker pods deleted (attributes pool, reason: scale_down, rollout, drained, "
                "drain_timeout, exited)")
DRAINS = _meter.create_counter(
    "voxmesh.operator.drains", description="Workers asked to drain (attribute pool)")
API_ERRORS = _meter.create_counter(
    "voxmesh.operator.api_errors", description="Failed Kubernetes API calls (attribute pool)")

#: Latest status per pool, read by the observable gauges below.
_STATUS: dict[str, Mapping[str, Any]] = {}


def record_status(pool: str, status: Mapping[str, Any]) -> None:
    """Keeps a pool's latest status for the gauges."""
    _STATUS[pool] = status


def _workers(_options: CallbackOptions) -> list[Observation]:
    return [Observation(count, {"pool": pool, "state": state})
            for pool, status in _STATUS.items()
            for state, count in (status.get("workers") or {}).items()]


def _desired(_options: CallbackOptions) -> list[Observation]:
    return [Observation(status.get("desiredReplicas", 0), {"pool": pool})
            for pool, status in _STATUS.items()]


_meter.create_observable_gauge("voxmesh.operator.pool_workers", callbacks=[_workers],
                               description="Workers by state (attributes pool, state)")
_meter.create_observable_gauge("voxmesh.operator.pool_desired", callbacks=[_desired],
                               description="busy + buffer, clamped to min/max (attribute pool)")


def deletion_reason(reason: str) -> str:
    """A low-cardinality label for a planner's deletion reason."""
    for prefix, label in (("scale down", "scale_down"), ("rollout", "rollout"),
                          ("drained", "drained"), ("drain timeout", "drain_timeout"),
                          ("worker exited", "exited")):
        if reason.startswith(prefix):
            return label
    return "other"
