import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from voxmesh.agent import ToolDefinition
from voxmesh.cli.stack import free_port
from voxmesh.toolcalls import ParsedToolCall
from voxmesh_worker.tools import ToolRunner

pytestmark = pytest.mark.asyncio(loop_scope="session")

CALLS: list[dict[str, Any]] = []


def record_booking(day: str, party_size: int) -> dict[str, Any]:
    CALLS.append({"day": day, "party_size": party_size})
    return {"confirmed": True}


async def broken(**_: Any) -> None:
    raise RuntimeError("database is down")


BOOKING_SCHEMA = {"type": "object", "properties": {
    "day": {"type": "string"}, "party_size": {"type": "integer", "minimum": 1, "maximum": 12}},
    "required": ["day", "party_size"], "additionalProperties": False}


@pytest_asyncio.fixture(loop_scope="session")
async def order_api() -> AsyncIterator[str]:
    """A real HTTP server standing in for an order system."""
    async def orders(request: web.Request) -> web.Response:
        order_id = request.query.get("order_id", "")
        if order_id == "9999":
            return web.json_response({"error": "no such order"}, status=404)
        if order_id == "5555":
            await asyncio.sleep(2)
        return web.json_response({"order_id": order_id, "status": "shipped"})

    app = web.Application()
    app.router.add_get("/orders", orders)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/orders"
    await runner.cleanup()


def _runner(url: str = "http://127.0.0.1:1/orders") -> ToolRunner:
    return ToolRunner([
        ToolDefinition(name="book", description="Book.", parameters=BOOKING_SCHEMA,
                       python=f"{__name__}:record_booking"),
        ToolDefinition(name="broken", description="Fails.", python=f"{__name__}:broken"),
        ToolDefinition(name="lookup_order", description="Order status.", timeout_s=0.5,
                       parameters={"type": "object", "properties": {
                           "order_id": {"type": "string", "pattern": "^[0-9]{3,10}$"}},
                           "required": ["order_id"]},
                       http={"url": url, "method": "GET"}),
    ])


async def test_python_tool_runs_with_validated_arguments() -> None:
    CALLS.clear()
    result = await _runner().run(ParsedToolCall("book", {"day": "Friday", "party_size": 4}))
    assert result.status == "ok" and result.content == {"confirmed": True}
    assert CALLS == [{"day": "Friday", "party_size": 4}]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"day": "Friday", "party_size": 40}, "party_size: 40 is greater than the maximum of 12"),
        ({"day": "Friday"}, "'party_size' is a required property"),
        ({"day": "Friday", "party_size": "four"}, "party_size: 'four' is not of type 'integer'"),
        ({"day": "Friday", "party_size": 2, "rm": "-rf"}, "Additional properties are not allowed"),
    ],
)
async def test_schema_violations_are_rejected_before_execution(
    arguments: dict[str, Any], reason: str
) -> None:
    CALLS.clear()
    result = await _runner().run(ParsedToolCall("book", arguments))
    assert result.status == "rejected" and reason in result.content
    assert CALLS == [], "a call that violates the schema must never run"
    assert '"status": "rejected"' in result.to_message()


async def test_unknown_tool_and_failing_tool_become_results() -> None:
    unknown = await _runner().run(ParsedToolCall("drop_tables", {}))
    assert unknown.status == "rejected" and "unknown tool 'drop_tables'" in unknown.content
    failed = await _runner().run(ParsedToolCall("broken", {}))
    assert failed.status == "error" and "database is down" in failed.content


async def test_http_tool_success_error_and_timeout(order_api: str) -> None:
    runner = _runner(order_api)
    ok = await runner.run(ParsedToolCall("lookup_order", {"order_id": "1234"}))
    assert ok.status == "ok" and ok.content == {"order_id": "1234", "status": "shipped"}
    missing = await runner.run(ParsedToolCall("lookup_order", {"order_id": "9999"}))
    assert missing.status == "error" and "HTTP 404" in missing.content
    slow = await runner.run(ParsedToolCall("lookup_order", {"order_id": "5555"}))
    assert slow.status == "timeout" and "0.5 s" in slow.content
    bad = await runner.run(ParsedToolCall("lookup_order", {"order_id": "12; DROP"}))
    assert bad.status == "rejected"
