"""The prompt of one Generate: system prompt, history and tools, built for each provider kind.

Native-tools providers (OpenAI and compatible servers) take tools as API parameters and a
context with ``tool_calls`` and ``tool`` messages; text providers (the embedded local model)
read the tools in their system prompt and see earlier calls as a neutral spoken line.
"""

from __future__ import annotations

import json
from typing import Any

from voxmesh.errors import InvalidInputError
from voxmesh.toolcalls import tools_system_prompt
from voxmesh.v1 import llm_pb2
from voxmesh_llm import history as ops
from voxmesh_llm.context_store import StoredMessage
from voxmesh_llm.providers.base import ChatMessage, ToolCallRequest, ToolSpec
from voxmesh_llm.turn_completion import TURN_COMPLETION_PROMPT


def tool_specs(request: llm_pb2.GenerateRequest) -> list[ToolSpec]:
    """The request's tool definitions, with their JSON schemas read.

    Raises:
        InvalidInputError: A schema is not a JSON object (reason ``TOOL_SCHEMA_INVALID``).
    """
    specs = []
    for index, tool in enumerate(request.tools):
        field = f"tools[{index}].parameters_json_schema"
        try:
            schema = json.loads(tool.parameters_json_schema or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"tool {tool.name!r}: parameters_json_schema is not valid JSON ({exc.msg})",
                reason="TOOL_SCHEMA_INVALID", field=field, component="llm") from None
        if not isinstance(schema, dict):
            raise InvalidInputError(
                f"tool {tool.name!r}: parameters_json_schema must be a JSON object",
                reason="TOOL_SCHEMA_INVALID", field=field, component="llm")
        specs.append(ToolSpec(tool.name, tool.description, schema))
    return specs


def build_messages(
    request: llm_pb2.GenerateRequest, history: list[StoredMessage], default_system: str,
    *, turn_marks: bool = False, native_tools: bool = False,
) -> list[ChatMessage]:
    """The chat for one Generate: system prompt, then the stored history (with the new input).

    Args:
        request: The Generate request (system prompt, tools).
        history: The stored messages, ending with this request's input.
        default_system: System prompt when the request has none.
        turn_marks: Ask for a turn-completion mark at the start of the reply.
        native_tools: Build for a provider that takes tools as API parameters (see
            :func:`native_messages`); otherwise for a text provider (:func:`text_messages`).
    """
    if native_tools:
        return native_messages(request, history, default_system)
    return text_messages(request, history, default_system, turn_marks=turn_marks)


def _greeting(history: list[StoredMessage]) -> str:
    greeting = " ".join(m.content for m in history if m.role == "assistant" and m.turn_index == 0)
    return f'\n\nThe call began with you saying: "{greeting.strip()}"' if greeting.strip() else ""


def _conversation(history: list[StoredMessage]) -> list[StoredMessage]:
    """The history less summaries (they join the system prompt) and the greeting (ditto)."""
    return [m for m in history
            if m.role != "system" and not (m.role == "assistant" and m.turn_index == 0)]


def native_messages(
    request: llm_pb2.GenerateRequest, history: list[StoredMessage], default_system: str
) -> list[ChatMessage]:
    """The chat for a native-tools provider (OpenAI and compatible servers).

    Built for prompt caching: the system prompt opens with what is the same on every request
    of the call (the agent's prompt, the turn-mark instructions whenever the agent uses marks,
    the greeting), and only then the summary of older turns, which changes once in a while.
    Tools travel as API parameters, the same list on every step. Assistant steps carry their
    ``tool_calls`` and each result is a ``tool`` message with its ``tool_call_id``, as the
    OpenAI API requires.
    """
    system = request.system_prompt or default_system
    if request.turn_completion:
        system += TURN_COMPLETION_PROMPT
    system += _greeting(history)
    for summary in (m for m in history if m.role == "system"):
        system += f"\n\n{summary.content}"
    messages = [ChatMessage("system", system)]
    for message in _conversation(history):
        if message.role == "tool":
            messages.append(ChatMessage("tool", message.content, tool_call_id=message.call_id))
        elif message.tool_calls:
            messages.append(ChatMessage("assistant", message.content, tool_calls=[
                ToolCallRequest(str(call.get("call_id", "")), str(call.get("name", "")),
                                _arguments_json(call.get("arguments", {})))
                for call in message.tool_calls]))
        else:
            messages.append(ChatMessage(message.role, message.content))
    return messages


def _arguments_json(arguments: Any) -> str:
    # Stored as the object the model wrote, or its raw text when it was not valid JSON.
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def text_messages(
    request: llm_pb2.GenerateRequest, history: list[StoredMessage], default_system: str,
    *, turn_marks: bool = False,
) -> list[ChatMessage]:
    """The chat for a text provider (the embedded local model).

    The agent's system prompt stays the first, stable part of the prompt (the provider's prefix
    cache); a stored summary of older turns is appended to it, as Qwen's template wants a
    single system message first. Small local models answer a tool result by repeating the call
    when the tool listing is still in the prompt, so it is offered only for the first step of a
    turn (one tool round per turn), and earlier tool-call messages without text are shown as a
    neutral spoken line.

    Args:
        request: The Generate request (system prompt, tools).
        history: The stored messages, ending with this request's input.
        default_system: System prompt when the request has none.
        turn_marks: Ask for a turn-completion mark at the start of the reply.
    """
    system = request.system_prompt or default_system
    for summary in (m for m in history if m.role == "system"):
        system += f"\n\n{summary.content}"
    system += _greeting(history)
    if request.tools and not request.tool_results:
        system += tools_system_prompt([
            {"name": t.name, "description": t.description,
             "parameters": json.loads(t.parameters_json_schema or "{}")}
            for t in request.tools])
    if turn_marks:
        system += TURN_COMPLETION_PROMPT
    messages = [ChatMessage("system", system)]
    for message in _conversation(history):
        content = message.content
        if message.tool_calls and not content.strip():
            content = ops.TOOL_CALL_LINE
        # The call id rides along: OpenAI-compatible servers in text mode require it on tool
        # messages; local models ignore it.
        messages.append(ChatMessage(message.role, content, tool_call_id=message.call_id))
    return messages
