"""Entry point: ``python -m voxmesh_worker``."""

from __future__ import annotations

import asyncio

from voxmesh.config import load_settings
from voxmesh.logs import setup_logging
from voxmesh_worker.settings import WorkerSettings
from voxmesh_worker.worker import Worker


def main() -> None:
    """Starts an agent worker."""
    settings = load_settings(WorkerSettings)
    setup_logging("worker", settings.log_level, settings.log_format)
    asyncio.run(Worker(settings).run())


if __name__ == "__main__":
    main()
