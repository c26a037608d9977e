"""A round of tool calls: filler and watchdog lines, and no dangling call after barge-in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any

import pytest

from voxmesh.agent import ToolDefinition
from voxmesh.v1 import llm_pb2
from voxmesh_worker.speech import Turn
from voxmesh_worker.tool_round import ToolRound
from voxmesh_worker.tools import ToolRunner

pytestmark = pytest.mark.asyncio(loop_scope="session")

FINISHED: list[str] = []


async def slow_lookup(order_id: str) -> dict[str, str]:
    await asyncio.sleep(0.6)
    FINISHED.append(order_id)
    return {"order_id": order_id, "status": "shipped"}


class _Speech:
    """Records what the round says (the TTS stream is tested elsewhere)."""

    def __init__(self) -> None:
        self.said: list[str] = []

    async def say(self, text: str) -> None:
        self.said.append(text)


def _tool(name: str, *, interruptible: bool) -> ToolDefinition:
    return ToolDefinition(
        name=name, description="Order status.", python=f"{__name__}:slow_lookup",
        parameters={"type": "object", "properties": {"order_id": {"type": "string"}},
                    "required": ["order_id"]},
        filler="One moment.", watchdog_line="Still looking.", watchdog_s=0.2,
        interruptible=interruptible)


def _round(speech: _Speech, committed: list[llm_pb2.ToolResultMessage],
           background: list[asyncio.Task[None]]) -> ToolRound:
    async def commit(results: list[llm_pb2.ToolResultMessage]) -> None:
        committed.extend(results)

    def keep_running(coro: Coroutine[Any, Any, None], name: str) -> None:
        background.append(asyncio.create_task(coro, name=name))

    loop = asyncio.get_running_loop()
    turn = Turn(index=1, transcript=loop.create_future(), speech_end=0.0, speech_end_wall=0.0)
    runner = ToolRunner([_tool("lookup", interruptible=True),
                         _tool("book", interruptible=False)])
    return ToolRound(turn, speech, runner=runner, commit=commit,  # type: ignore[arg-type]
                     keep_running=keep_running)


def _call(call_id: str, name: str, arguments: dict[str, Any]) -> llm_pb2.ToolCall:
    return llm_pb2.ToolCall(call_id=call_id, name=name, arguments_json=json.dumps(arguments))


async def test_filler_then_watchdog_then_results() -> None:
    speech, committed, background = _Speech(), [], []
    outcomes = await _round(speech, committed, background).run(
        [_call("c1", "lookup", {"order_id": "1"}), _call("c2", "lookup", {"order_id": 7})])
    # One filler for both calls; the watchdog fired while the valid call was still running.
    assert speech.said == ["One moment.", "Still looking."]
    assert [o.result.status for o in outcomes] == ["ok", "rejected"]
    assert "order_id: 7 is not of type 'string'" in outcomes[1].result.content
    assert committed == []  # results go back to the model with the next Generate


async def test_barge_in_cancels_interruptible_calls_and_finishes_the_others() -> None:
    speech, committed, background = _Speech(), [], []
    tool_round = _round(speech, committed, background)
    running = asyncio.create_task(tool_round.run(
        [_call("c1", "lookup", {"order_id": "11"}), _call("c2", "book", {"order_id": "22"})]))
    await asyncio.sleep(0.1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    # The interruptible call got its CANCELLED result at once...
    assert [(r.call_id, json.loads(r.content_json)["status"]) for r in committed] == [
        ("c1", "cancelled")]
    # ...the other one runs to completion in the background and its result lands in context.
    assert len(background) == 1
    await asyncio.wait_for(background[0], 2)
    assert [(r.call_id, json.loads(r.content_json)["status"]) for r in committed] == [
        ("c1", "cancelled"), ("c2", "ok")]
    assert "22" in FINISHED and "11" not in FINISHED
