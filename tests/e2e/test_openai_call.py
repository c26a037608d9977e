"""A whole synthetic call with the LLM service on the ``openai`` provider.

The LLM service talks to a real OpenAI-compatible server (llama.cpp serving the local Qwen
GGUF, ``tests/support/llama_server.py``) through the official SDK, the way a deployment points
``VOXMESH_LLM_BASE_URL`` at vLLM or llama.cpp. The caller speaks to the order-status agent over
WebRTC; the agent calls its order tool over HTTP and answers with the result. The 0.5B model
has no tool-call parser behind llama.cpp's server, so the provider runs with
``VOXMESH_LLM_TOOL_FORMAT=text`` (tools in the prompt, calls parsed from the text).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from llama_server import LlamaServer, llama_server
from order_system import order_agent

from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Ports, Stack
from voxmesh.v1 import llm_pb2, llm_pb2_grpc
from voxmesh_edge.client import WebRTCCaller

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

KEY = "sk-e2e-" + uuid.uuid4().hex


class OrderApi:
    """A real HTTP order system."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []

    async def orders(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        await asyncio.sleep(0.5)
        return web.json_response({"order_id": request.query.get("order_id"),
                                  "status": "shipped", "delivery": "Friday"})


@pytest_asyncio.fixture(loop_scope="session")
async def openai_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, OrderApi, LlamaServer]]:
    api = OrderApi()
    async with order_agent(tmp_path, api.orders) as agent, \
            llama_server(tmp_path, api_key=KEY) as server:
        stack = Stack(state_dir=tmp_path / "state", ports=Ports.free(), env={
            "VOXMESH_WORKER_AGENT_FILE": str(agent), "VOXMESH_EDGE_AGENT": "order-status",
            "VOXMESH_LLM_PROVIDER": "openai", "VOXMESH_LLM_BASE_URL": server.base_url,
            "VOXMESH_LLM_API_KEY": KEY, "VOXMESH_LLM_MODEL": "qwen2.5-coder-0.5b-instruct",
            "VOXMESH_LLM_TOOL_FORMAT": "text",
            # The first turn evaluates the whole agent prompt on two shared cores.
            "VOXMESH_LLM_REQUEST_TIMEOUT_S": "60"})
        try:
            await stack.start()
            yield stack, api, server
        finally:
            await stack.stop()


async def test_order_status_call_with_a_tool_call_through_the_openai_provider(
    openai_stack: tuple[Stack, OrderApi, LlamaServer], caller_voice: CallerVoice
) -> None:
    stack, api, server = openai_stack
    answered_before = server.chat_requests()
    caller = WebRTCCaller(stack.edge_url, agent="order-status")
    await caller.connect()
    try:
        await caller.wait_greeting()
        sent = await caller.play(caller_voice.speak("What's the status of order 1234?"))
        final = await caller.wait_event(
            lambda e: e.get("agent_text", {}).get("is_final", False)
            and e["agent_text"].get("turn_index") == 1, timeout=120)
        first_audio, _, _ = await caller.wait_agent_audio(start_after=sent, timeout=5)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.llm}") as channel:
            context = await llm_pb2_grpc.LanguageModelStub(channel).GetContext(
                llm_pb2.GetContextRequest(session_id=caller.session_id or ""))
    finally:
        await caller.hangup()
    assert api.requests == [{"order_id": "1234"}], final
    answer = final["agent_text"]["text"].lower()
    assert "shipped" in answer or "friday" in answer, answer
    assert first_audio > sent
    # Both steps of the turn (the call, then the answer with its result) went to the server.
    assert server.chat_requests() - answered_before >= 2
    roles = [m.role for m in context.messages if m.turn_index == 1]
    assert roles[:3] == ["user", "assistant", "tool"] and roles[-1] == "assistant", roles
    tool_result = next(m.content for m in context.messages if m.role == "tool")
    assert "shipped" in tool_result
