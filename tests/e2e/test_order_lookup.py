"""Tool calls end to end: the order-status agent looks an order up over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from order_system import ORDER_AGENT_FILE, order_agent

from voxmesh.agent import load_agent
from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Ports, Stack
from voxmesh.v1 import llm_pb2, llm_pb2_grpc
from voxmesh_edge.client import WebRTCCaller

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]



FAILING_ORDER, SLOW_ORDER = "5678", "4321"
KB = ORDER_AGENT_FILE.parent / "kb" / "northwind"
FOUND = "Here's what I found."


class OrderApi:
    """A real HTTP order system; answers slowly so the filler has something to cover."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.answered_at: list[float] = []

    async def orders(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        order_id = request.query.get("order_id")
        if order_id == FAILING_ORDER:
            return web.json_response({"error": "database unavailable"}, status=503)
        if order_id == SLOW_ORDER:
            await asyncio.sleep(20)  # far past the tool's 4 s timeout
        await asyncio.sleep(1.5)
        self.answered_at.append(time.monotonic())
        return web.json_response({"order_id": request.query.get("order_id"), "status": "shipped",
                                  "delivery": "Friday"})


@pytest_asyncio.fixture(loop_scope="session")
async def order_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, OrderApi]]:
    api = OrderApi()
    async with order_agent(tmp_path, api.orders) as agent:
        stack = Stack(state_dir=tmp_path / "state", ports=Ports.free(), env={
            "VOXMESH_WORKER_AGENT_FILE": str(agent), "VOXMESH_EDGE_AGENT": "order-status"})
        try:
            await stack.start()
            yield stack, api
        finally:
            await stack.stop()


async def test_order_lookup_with_filler_before_the_result(
    order_stack: tuple[Stack, OrderApi], caller_voice: CallerVoice
) -> None:
    stack, api = order_stack
    caller = WebRTCCaller(stack.edge_url, agent="order-status")
    await caller.connect()
    try:
        assert await caller.wait_greeting() == "Northwind Outfitters order line. What's your order number?"
        sent = await caller.play(caller_voice.speak("What's the status of order 1234?"))
        final = await caller.wait_event(
            lambda e: e.get("agent_text", {}).get("is_final", False)
            and e["agent_text"].get("turn_index") == 1, timeout=60)
        first_audio, _, _ = await caller.wait_agent_audio(start_after=sent, timeout=5)
    finally:
        await caller.hangup()
    assert api.requests == [{"order_id": "1234"}], final
    # The filler was heard before the order system had even answered.
    assert first_audio < api.answered_at[0]
    answer = final["agent_text"]["text"].lower()
    assert answer.startswith("one moment while i check that order")
    assert "shipped" in answer


async def _ask_about_order(stack: Stack, voice: CallerVoice, order: str) -> tuple[str, list[Any]]:
    """One call: asks for an order's status; returns the answer and the call's context."""
    caller = WebRTCCaller(stack.edge_url, agent="order-status")
    await caller.connect()
    try:
        await caller.wait_greeting()
        await caller.play(voice.speak(f"What's the status of order {order}?"))
        final = await caller.wait_event(
            lambda e: e.get("agent_text", {}).get("is_final", False)
            and e["agent_text"].get("turn_index") == 1, timeout=60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.llm}") as channel:
            context = await llm_pb2_grpc.LanguageModelStub(channel).GetContext(
                llm_pb2.GetContextRequest(session_id=caller.session_id or ""))
    finally:
        await caller.hangup()
    return final["agent_text"]["text"], list(context.messages)


@pytest.mark.parametrize(("order", "status"), [(FAILING_ORDER, "error"), (SLOW_ORDER, "timeout")])
async def test_failed_and_timed_out_tools_get_an_apology_and_a_closed_pair_in_context(
    order_stack: tuple[Stack, OrderApi], caller_voice: CallerVoice, order: str, status: str
) -> None:
    stack, api = order_stack
    tool = load_agent(ORDER_AGENT_FILE).tools[0]
    answer, context = await _ask_about_order(stack, caller_voice, order)
    heard = [m.content for m in context if m.role == "user"]
    assert api.requests[-1] == {"order_id": order}, f"STT heard {heard!r}; answer {answer!r}"
    # The turn ends with the tool's apology; only the slow tool needed the watchdog line.
    assert answer.endswith(tool.error_line), answer
    assert (tool.watchdog_line in answer) == (status == "timeout"), answer
    # The call in context has its result; nothing is left IN_PROGRESS.
    calls = [call["call_id"] for m in context if m.tool_calls_json
             for call in json.loads(m.tool_calls_json)]
    results = {m.call_id: json.loads(m.content)["status"] for m in context if m.role == "tool"}
    assert len(calls) == 1 and results.get(calls[0]) == status, (calls, results)


def _result_line(text: str) -> str:
    # A result the caller cut short is said again once, so they hear all of it.
    return text.removeprefix("As I was saying, ")


async def test_policy_question_is_answered_from_the_knowledge_base_in_a_later_turn(
    order_stack: tuple[Stack, OrderApi], caller_voice: CallerVoice
) -> None:
    stack, _ = order_stack
    caller = WebRTCCaller(stack.edge_url, agent="order-status")
    await caller.connect()
    try:
        await caller.wait_greeting()
        await caller.play(caller_voice.speak("What is your return policy?"))
        first = await caller.wait_event(
            lambda e: e.get("agent_text", {}).get("is_final", False)
            and e["agent_text"].get("turn_index") == 1, timeout=60)
        # The caller goes on talking while the search runs.
        await caller.play(caller_voice.speak("Thank you. Do you ship to Canada?"))
        try:
            later = await caller.wait_event(
                lambda e: e.get("agent_text", {}).get("is_final", False)
                and e["agent_text"].get("turn_index", 0) >= 2
                and _result_line(e["agent_text"].get("text", "")).startswith(FOUND),
                timeout=90)
        except TimeoutError:
            said = [(k, e[k]) for e in caller.events for k in ("agent_text", "user_transcript")
                    if e.get(k, {}).get("is_final")]
            raise AssertionError(f"the policy was never spoken: {said}") from None
    finally:
        await caller.hangup()
    assert first["agent_text"]["text"].startswith("Let me look that up for you.")
    # The finding is read from the bundled knowledge base, word for word, in a later turn.
    finding = " ".join(_result_line(later["agent_text"]["text"]).removeprefix(FOUND).split())
    documents = " ".join(" ".join(path.read_text().split()) for path in KB.glob("*.md"))
    assert finding and finding in documents, finding
