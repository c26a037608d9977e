"""Entry point: ``python -m voxmesh_edge`` (also the ``voxmesh-edge`` script)."""

from __future__ import annotations

from voxmesh import eventloop
from voxmesh.config import load_settings
from voxmesh.logs import setup_logging
from voxmesh.metrics import setup_metrics
from voxmesh.telemetry import setup_tracing, shutdown_tracing
from voxmesh_edge.server import serve
from voxmesh_edge.settings import EdgeSettings


def main() -> None:
    """Starts the WebRTC edge and runs it until SIGTERM/SIGINT."""
    settings = load_settings(EdgeSettings)
    setup_logging("edge", settings.log_level, settings.log_format)
    setup_tracing("edge")
    setup_metrics("edge")
    try:
        eventloop.run(serve(settings))
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    main()
