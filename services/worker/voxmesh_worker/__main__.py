"""Entry point: ``python -m voxmesh_worker``."""

from __future__ import annotations

import logging
import sys

from voxmesh import eventloop
from voxmesh.agent import AgentFileError, load_agent
from voxmesh.config import load_settings
from voxmesh.logs import setup_logging
from voxmesh.metrics import setup_metrics
from voxmesh.telemetry import setup_tracing, shutdown_tracing
from voxmesh_worker.settings import WorkerSettings, apply_agent
from voxmesh_worker.tools import ToolRunner
from voxmesh_worker.worker import Worker


def main() -> None:
    """Starts an agent worker."""
    settings = load_settings(WorkerSettings)
    tools = None
    if settings.agent_file is not None:
        try:
            agent = load_agent(settings.agent_file)
        except AgentFileError as exc:
            print(f"invalid agent file:\n{exc}", file=sys.stderr)
            raise SystemExit(2) from None
        settings, tools = apply_agent(settings, agent), ToolRunner(agent.tools)
    setup_logging("worker", settings.log_level, settings.log_format)
    setup_tracing("worker")
    setup_metrics("worker")
    try:
        eventloop.run(Worker(settings, tools=tools).run())
    except (ConnectionError, TimeoutError, RuntimeError, OSError) as exc:
        logging.getLogger("voxmesh.worker").error("worker cannot start: %s", exc)
        raise SystemExit(1) from None
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    main()
