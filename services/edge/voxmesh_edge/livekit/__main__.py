"""Entry point: ``python -m voxmesh_edge.livekit`` (the LiveKit edge)."""

from __future__ import annotations

import asyncio
import signal
import sys

from voxmesh.config import load_settings
from voxmesh.errors import ConfigError
from voxmesh.logs import setup_logging
from voxmesh.metrics import setup_metrics
from voxmesh.telemetry import setup_tracing, shutdown_tracing
from voxmesh_edge.livekit.settings import LiveKitSettings
from voxmesh_edge.livekit.worker import serve


async def _run(settings: LiveKitSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)


def main() -> None:
    """Starts the LiveKit edge and runs it until SIGTERM/SIGINT, then drains."""
    settings = load_settings(LiveKitSettings)
    setup_logging("edge-livekit", settings.log_level, settings.log_format)
    try:
        settings.credentials()  # fail before anything starts
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_tracing("edge")
    setup_metrics("edge")
    try:
        asyncio.run(_run(settings))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    main()
