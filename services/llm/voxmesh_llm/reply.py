"""From the model's text deltas to Generate events: turn-completion mark, speech, tool calls."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from voxmesh.toolcalls import ToolCallParser
from voxmesh.v1 import llm_pb2
from voxmesh_llm.providers.base import LLMOutput, ToolCallRequest
from voxmesh_llm.turn_completion import COMPLETE, TurnMarkParser


@dataclass
class Reply:
    """What a reply has produced so far (read after the stream ends, or is cut off).

    Attributes:
        spoken: Text sent as deltas.
        calls: Tool calls sent, as stored: ``{"call_id", "name", "arguments"}``.
        verdict: The turn-completion verdict, once sent (None if not asked for).
        incomplete: The verdict said the caller had not finished; the reply stopped there.
    """

    spoken: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    verdict: llm_pb2.TurnCompletion.Verdict | None = None
    incomplete: bool = False


def verdict_event(verdict: llm_pb2.TurnCompletion.Verdict) -> llm_pb2.GenerateEvent:
    """A TurnCompletion event."""
    return llm_pb2.GenerateEvent(turn_completion=llm_pb2.TurnCompletion(verdict=verdict))


def _call_event(call: dict[str, Any]) -> llm_pb2.GenerateEvent:
    arguments = call["arguments"]
    return llm_pb2.GenerateEvent(tool_call=llm_pb2.ToolCall(
        call_id=call["call_id"], name=call["name"],
        arguments_json=arguments if isinstance(arguments, str) else json.dumps(arguments)))


def _native_arguments(call: ToolCallRequest) -> dict[str, Any] | str:
    """A native call's arguments as stored: the object, or the raw text if it is not one."""
    try:
        arguments = json.loads(call.arguments_json)
    except json.JSONDecodeError:
        return call.arguments_json
    return arguments if isinstance(arguments, dict) else call.arguments_json


async def reply_events(
    deltas: AsyncGenerator[LLMOutput, None], reply: Reply, *, turn_marks: bool
) -> AsyncGenerator[llm_pb2.GenerateEvent, None]:
    """Turns the model's output into events, recording them in ``reply``.

    With ``turn_marks`` a leading mark is taken off the reply and, unless ``reply.verdict`` is
    already set, sent as the verdict first. A verdict other than complete ends the reply at
    once: ``deltas`` is closed, which stops the generation. Tool calls follow the text: calls
    written as text get a fresh call_id, native calls keep the provider's (results go back to
    the provider under it). A call is recorded in ``reply.calls`` only once it has been handed
    on.

    Args:
        deltas: The provider's stream; closed when this generator ends.
        reply: Filled in as events go out.
        turn_marks: The model was asked to open its reply with a mark.
    """
    marks = TurnMarkParser() if turn_marks else None
    parser = ToolCallParser()
    native: list[ToolCallRequest] = []
    async with aclosing(deltas):
        async for delta in deltas:
            if isinstance(delta, ToolCallRequest):
                native.append(delta)
                continue
            if marks is not None:
                delta = marks.push(delta)
                if reply.verdict is None and marks.verdict is not None:
                    # Recorded before the yield: a client that has its answer may hang up at
                    # once, and the turn must still be dropped from the context.
                    reply.verdict = marks.verdict
                    reply.incomplete = marks.verdict != COMPLETE
                    yield verdict_event(marks.verdict)
                    if reply.incomplete:
                        return
            if speakable := parser.push(delta):
                reply.spoken += speakable
                yield llm_pb2.GenerateEvent(delta=llm_pb2.TextDelta(text=speakable))
    if marks is not None and reply.verdict is None:
        marks.finish()  # the reply had nothing visible in it, so no mark either
        reply.verdict = COMPLETE
        yield verdict_event(COMPLETE)
    if rest := parser.finish():
        reply.spoken += rest
        yield llm_pb2.GenerateEvent(delta=llm_pb2.TextDelta(text=rest))
    calls = [{"call_id": uuid.uuid4().hex[:12], "name": call.name,
              "arguments": call.raw if call.error else call.arguments} for call in parser.calls]
    calls += [{"call_id": call.call_id or uuid.uuid4().hex[:12], "name": call.name,
               "arguments": _native_arguments(call)} for call in native]
    for call in calls:
        yield _call_event(call)
        reply.calls.append(call)
