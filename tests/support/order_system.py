"""The order-status example for tests: its agent file, its order system, its prompt and tool.

:func:`order_agent` points a copy of the agent file at an order system served on loopback;
:data:`ORDER_PROMPT` and :data:`LOOKUP_ORDER` are for tests that call the LLM service directly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from voxmesh.cli.stack import free_port
from voxmesh.v1 import llm_pb2

#: The example agent (``services/worker/agents/order-status.yaml``).
ORDER_AGENT_FILE = (Path(__file__).resolve().parents[2] / "services" / "worker" / "agents"
               / "order-status.yaml")
_EXAMPLE_URL = "http://127.0.0.1:8099/orders"

#: A short order-line system prompt and its tool, for tests that call the LLM service directly.
ORDER_PROMPT = (
    "You are the order-status line of Northwind Outfitters. Answer in one or two short spoken "
    "sentences. When the caller asks about an order, look it up with the lookup_order tool, "
    "then tell them its status and delivery date.")
LOOKUP_ORDER = llm_pb2.ToolDefinition(
    name="lookup_order", description="Look up the status and delivery date of an order.",
    parameters_json_schema=json.dumps({
        "type": "object", "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"]}))


@asynccontextmanager
async def order_agent(
    directory: Path, orders: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[Path]:
    """Serves ``orders`` at ``GET /orders`` on a free port while the context is open.

    Yields:
        A copy of the order-status agent file (in ``directory``) whose tool calls that server.
    """
    app = web.Application()
    app.router.add_get("/orders", orders)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        agent = directory / "order-status.yaml"
        agent.write_text(ORDER_AGENT_FILE.read_text().replace(
            _EXAMPLE_URL, f"http://127.0.0.1:{port}/orders"))
        yield agent
    finally:
        await runner.cleanup()
