"""Entry point: ``python -m voxmesh_worker``."""

from __future__ import annotations

import asyncio
import logging

from voxmesh.config import load_settings
from voxmesh.logs import setup_logging
from voxmesh.metrics import setup_metrics
from voxmesh.telemetry import setup_tracing, shutdown_tracing
from voxmesh_worker.settings import WorkerSettings
from voxmesh_worker.worker import Worker


def main() -> None:
    """Starts an agent worker."""
    settings = load_settings(WorkerSettings)
    setup_logging("worker", settings.log_level, settings.log_format)
    setup_tracing("worker")
    setup_metrics("worker")
    try:
        asyncio.run(Worker(settings).run())
    except (ConnectionError, TimeoutError, RuntimeError, OSError) as exc:
        logging.getLogger("voxmesh.worker").error("worker cannot start: %s", exc)
        raise SystemExit(1) from None
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    main()
