"""Tool calls end to end: the order-status agent looks an order up over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Ports, Stack, free_port
from voxmesh_edge.client import WebRTCCaller

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

AGENT = Path(__file__).resolve().parents[2] / "services" / "worker" / "agents" / "order-status.yaml"


class OrderApi:
    """A real HTTP order system; answers slowly so the filler has something to cover."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.answered_at: list[float] = []

    async def orders(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        await asyncio.sleep(1.5)
        self.answered_at.append(time.monotonic())
        return web.json_response({"order_id": request.query.get("order_id"), "status": "shipped",
                                  "delivery": "Friday"})


@pytest_asyncio.fixture(loop_scope="session")
async def order_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, OrderApi]]:
    api = OrderApi()
    app = web.Application()
    app.router.add_get("/orders", api.orders)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    agent = tmp_path / "order-status.yaml"
    agent.write_text(AGENT.read_text().replace("http://127.0.0.1:8099/orders",
                                               f"http://127.0.0.1:{port}/orders"))
    stack = Stack(state_dir=tmp_path / "state", ports=Ports.free(), env={
        "VOXMESH_WORKER_AGENT_FILE": str(agent), "VOXMESH_EDGE_AGENT": "order-status"})
    await stack.start()
    try:
        yield stack, api
    finally:
        await stack.stop()
        await runner.cleanup()


async def test_order_lookup_with_filler_before_the_result(
    order_stack: tuple[Stack, OrderApi], caller_voice: CallerVoice
) -> None:
    stack, api = order_stack
    caller = WebRTCCaller(stack.edge_url, agent="order-status")
    await caller.connect()
    try:
        sent = await caller.play(caller_voice.speak("What's the status of order 1234?"))
        final = await caller.wait_event(
            lambda e: e.get("agent_text", {}).get("is_final", False), timeout=60)
        first_audio, _, _ = await caller.wait_agent_audio(start_after=sent, timeout=5)
    finally:
        await caller.hangup()
    assert api.requests == [{"order_id": "1234"}]
    # The filler was heard before the order system had even answered.
    assert first_audio < api.answered_at[0]
    answer = final["agent_text"]["text"].lower()
    assert answer.startswith("one moment while i check that order")
    assert "shipped" in answer
