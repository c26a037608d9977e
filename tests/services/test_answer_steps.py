"""The per-turn cap on tool steps, against a scripted LanguageModel served over loopback gRPC.

The scripted model always asks for a tool, which the local model can't be made to do on
demand; the worker's TurnAnswer talks to it through the real generated stubs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import grpc
import pytest

from voxmesh.agent import ToolDefinition
from voxmesh.cli.stack import free_port
from voxmesh.v1 import llm_pb2, llm_pb2_grpc
from voxmesh_worker.answer import TurnAnswer
from voxmesh_worker.clients import ServiceClients
from voxmesh_worker.settings import WorkerSettings
from voxmesh_worker.speech import Turn
from voxmesh_worker.tools import ToolRunner
from voxmesh_worker.turn_trace import TurnTrace, start_session_span

pytestmark = pytest.mark.asyncio(loop_scope="session")


def count_bookings(day: str) -> dict[str, Any]:
    return {"day": day, "free_tables": 3}


class AlwaysCallsTools(llm_pb2_grpc.LanguageModelServicer):
    """A scripted model (not a language model): every step asks for the same tool again."""

    def __init__(self) -> None:
        self.requests: list[llm_pb2.GenerateRequest] = []
        self.committed: list[llm_pb2.ToolResultMessage] = []

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.GenerateEvent]:
        self.requests.append(request)
        yield llm_pb2.GenerateEvent(tool_call=llm_pb2.ToolCall(
            call_id=f"call-{len(self.requests)}", name="count_bookings",
            arguments_json=json.dumps({"day": "Friday"})))
        yield llm_pb2.GenerateEvent(done=llm_pb2.GenerationDone(
            finish_reason=llm_pb2.GenerationDone.FINISH_REASON_TOOL_CALLS))

    async def CommitToolResults(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.CommitToolResultsRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.CommitToolResultsResponse:
        self.committed.extend(request.results)
        return llm_pb2.CommitToolResultsResponse()


class _Speech:
    def __init__(self) -> None:
        self.said: list[str] = []

    async def say(self, text: str) -> None:
        self.said.append(text)


async def test_tool_steps_stop_at_the_cap_with_a_rejected_result_and_an_apology() -> None:
    model = AlwaysCallsTools()
    server = grpc.aio.server()
    llm_pb2_grpc.add_LanguageModelServicer_to_server(model, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    clients = ServiceClients(stt="127.0.0.1:1", llm=f"127.0.0.1:{port}", tts="127.0.0.1:1")
    try:
        tool = ToolDefinition(
            name="count_bookings", description="Free tables on a day.",
            python=f"{__name__}:count_bookings", filler="Let me look.",
            parameters={"type": "object", "properties": {"day": {"type": "string"}}})
        loop = asyncio.get_running_loop()
        turn = Turn(index=1, transcript=loop.create_future(), speech_end=loop.time(),
                    speech_end_wall=0.0)
        turn.trace = TurnTrace(start_session_span("s1", "test", "w1"), "s1", 0.0)
        speech = _Speech()

        def keep_running(coro: Coroutine[Any, Any, None], name: str) -> None:
            coro.close()

        answer = TurnAnswer(
            turn, speech, session_id="s1", clients=clients,  # type: ignore[arg-type]
            settings=WorkerSettings(max_tool_steps=2), tools=ToolRunner([tool]),
            tool_definitions=[], keep_running=keep_running)
        await asyncio.wait_for(answer.run("Any tables on Friday?", ask_turn_completion=False), 10)
    finally:
        await clients.close()
        await server.stop(None)
    # Two tool rounds ran; the third request for a tool was refused, not executed.
    assert len(model.requests) == 3
    assert [len(r.tool_results) for r in model.requests] == [0, 1, 1]
    assert json.loads(model.requests[2].tool_results[0].content_json)["status"] == "ok"
    refused = [json.loads(r.content_json) for r in model.committed]
    assert [r.call_id for r in model.committed] == ["call-3"]
    assert refused == [{"status": "rejected", "error": "tool step limit of this turn reached"}]
    assert speech.said[-1].startswith("Sorry")
    assert speech.said.count("Let me look.") == 1  # the filler is not repeated every round
