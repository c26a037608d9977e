"""OpenTelemetry metrics with a Prometheus scrape endpoint per process.

``VOXMESH_METRICS_PORT`` (0 = off, the default for local runs; the chart sets 9464) starts an
HTTP server serving ``/metrics``. Instruments are created through :func:`meter` and work (as
no-ops) when metrics are off. Metric names, as Prometheus shows them, are listed in
``docs/metrics.md`` and used by the Grafana dashboards in ``infra/grafana``.
"""

from __future__ import annotations

import logging
import os

from opentelemetry import metrics
from opentelemetry.metrics import Meter

log = logging.getLogger("voxmesh.metrics")

#: Bucket boundaries (ms) for latency histograms: fine where voice latency lives (0.1-2 s).
LATENCY_BUCKETS_MS = (25, 50, 100, 150, 200, 300, 400, 500, 750, 1000, 1250, 1500, 2000, 3000,
                      5000, 10000)

_started: list[int] = []


def meter(component: str) -> Meter:
    """The meter of a component. Safe at import time: it follows :func:`setup_metrics`."""
    return metrics.get_meter(f"voxmesh.{component}")


def setup_metrics(component: str, port: int | None = None) -> int:
    """Installs the meter provider and serves ``/metrics`` on ``port``.

    Args:
        component: Process name, the ``service`` label of every series.
        port: Scrape port; default ``VOXMESH_METRICS_PORT``; 0 disables metrics.

    Returns:
        The port serving metrics, or 0 when disabled.
    """
    port = int(os.environ.get("VOXMESH_METRICS_PORT", "0")) if port is None else port
    if port == 0 or _started:
        return _started[0] if _started else 0
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import start_http_server

    latency_view = View(
        instrument_unit="ms",
        aggregation=ExplicitBucketHistogramAggregation(boundaries=LATENCY_BUCKETS_MS),
    )
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader()],
        resource=Resource.create({"service.name": f"voxmesh-{component}"}),
        views=[latency_view],
    )
    metrics.set_meter_provider(provider)
    start_http_server(port, addr=os.environ.get("VOXMESH_METRICS_HOST", "0.0.0.0"))  # noqa: S104
    _started.append(port)
    log.info("metrics on :%d/metrics", port)
    return port
