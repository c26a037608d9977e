"""``delay``: a diagnostics task that sleeps. Used by failover and capacity tests only.

It does no work, so it shows the queue's own behaviour: pickup latency, redelivery after a
replica dies, cancellation, drain, and (with ``fail_attempts``) retries and dead letters.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from voxmesh.errors import UnavailableError
from voxmesh_subagents.handlers.base import COMPONENT, TaskContext, TaskHandler


class Delay(TaskHandler):
    """Sleeps ``ms`` milliseconds (cancellable) and reports when it started."""

    name = "delay"
    description = "Diagnostics: sleep for a while. Not for agents."
    schema = {
        "type": "object",
        "properties": {
            "ms": {"type": "integer", "minimum": 0, "maximum": 600_000},
            "fail_attempts": {
                "type": "integer", "minimum": 0, "maximum": 50, "default": 0,
                "description": "fail (retryably) on this many first attempts"},
        },
        "required": ["ms"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """Returns ``{"slept_ms", "started_at"}`` (unix time the run began)."""
        started_at = time.time()
        if ctx.attempt <= int(args.get("fail_attempts", 0)):
            raise UnavailableError(f"delay: failing attempt {ctx.attempt} on purpose",
                                   reason="DIAGNOSTIC_FAILURE", component=COMPONENT)
        await asyncio.sleep(args["ms"] / 1000)
        return {"slept_ms": args["ms"], "started_at": started_at}
