"""A session's stored messages and what each RPC does to them.

The edits are pure functions of the message list, so the context store can re-run them when a
compare-and-set write loses to another replica, and tests can check them without NATS.

Seed rule: the context never holds a dangling tool call. An assistant message that called tools
is always followed by one ``tool`` message per call (its ``call_id``), first holding
:data:`TOOL_IN_PROGRESS`, later the result, or ``{"status": "cancelled", ...}`` when the caller interrupted the call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from voxmesh.errors import InvalidInputError

#: Content of a tool message whose result has not arrived yet.
TOOL_IN_PROGRESS = json.dumps({"status": "IN_PROGRESS"})
#: Content of a tool message whose call was never run (the answer was cut off first).
TOOL_CANCELLED = json.dumps({"status": "cancelled", "error": "the caller interrupted"})
#: What the model sees for an earlier assistant step that only called tools.
TOOL_CALL_LINE = "Let me look that up."


@dataclass
class StoredMessage:
    """A message in a session's context.

    Attributes:
        role: ``system`` (a summary of older turns), ``user``, ``assistant`` or ``tool``.
        content: The text; for tool messages the result JSON.
        turn_index: The turn it belongs to (a summary: the last turn it covers).
        interrupted: An assistant message the caller cut off.
        call_id: Tool messages: the call they answer.
        tool_calls: Assistant messages that called tools: ``{"call_id", "name", "arguments"}``.
    """

    role: str
    content: str
    turn_index: int = 0
    interrupted: bool = False
    call_id: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredMessage:
        """Reads a stored message, tolerating keys of older and newer versions."""
        known = {f.name for f in fields(cls)}
        message = cls(**{key: value for key, value in data.items() if key in known})
        if data.get("tool_call") and not message.tool_calls:
            # Stored before calls were kept: its content is the raw call, which the model was
            # shown as the neutral line; keep showing exactly that.
            message.content = TOOL_CALL_LINE
        return message


def add_input(
    messages: list[StoredMessage], turn_index: int, user_text: str,
    tool_results: Iterable[tuple[str, str]],
) -> list[StoredMessage]:
    """A Generate's input: the user message and/or the results of the turn's tool calls."""
    out = list(messages)
    if user_text:
        out.append(StoredMessage("user", user_text, turn_index))
    return apply_tool_results(out, turn_index, tool_results, strict=False)


def apply_tool_results(
    messages: list[StoredMessage], turn_index: int, results: Iterable[tuple[str, str]],
    *, strict: bool,
) -> list[StoredMessage]:
    """Puts each ``(call_id, content_json)`` in place of the tool message with that call_id.

    Args:
        messages: The stored messages (not modified).
        turn_index: Turn of a result that is appended.
        results: ``(call_id, content_json)`` pairs.
        strict: A call_id that matches no tool message is an error (else it is appended).

    Raises:
        InvalidInputError: ``strict`` and a call_id matches nothing.
    """
    out = list(messages)
    for call_id, content in results:
        index = next((i for i, m in enumerate(out)
                      if call_id and m.role == "tool" and m.call_id == call_id), None)
        if index is not None:
            out[index] = replace(out[index], content=content)
        elif strict:
            raise InvalidInputError(
                f"no stored tool call has call_id {call_id!r}", reason="TOOL_CALL_NOT_FOUND",
                field="results.call_id", component="llm")
        else:
            out.append(StoredMessage("tool", content, turn_index, call_id=call_id))
    return out


def tool_step(
    turn_index: int, text: str, calls: list[dict[str, Any]], *, interrupted: bool
) -> list[StoredMessage]:
    """An assistant step that called tools, with an IN_PROGRESS placeholder per call.

    When the stream was cut before ``done`` the worker never runs the calls (it runs them once
    the step has ended), so they are closed as cancelled right away instead.
    """
    result = TOOL_CANCELLED if interrupted else TOOL_IN_PROGRESS
    return [
        StoredMessage("assistant", text, turn_index, interrupted, tool_calls=calls),
        *(StoredMessage("tool", result, turn_index, call_id=call["call_id"]) for call in calls),
    ]


def remove_user_message(
    messages: list[StoredMessage], turn_index: int, text: str
) -> list[StoredMessage]:
    """Drops the last user message of a turn with this text (a Generate's own input)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.role == "user" and message.turn_index == turn_index and message.content == text:
            return messages[:index] + messages[index + 1:]
    return list(messages)


def set_heard(
    messages: list[StoredMessage], turn_index: int, text: str, interrupted: bool
) -> list[StoredMessage]:
    """Makes ``text`` the assistant text of a turn: what the caller actually heard.

    The turn's text-only assistant messages go, its tool-call assistant messages keep their
    calls but lose their text (the heard text covers every step of the turn), and one assistant
    message with the heard text follows the turn's other messages. Nothing heard and nothing
    cut off adds no message.
    """
    out: list[StoredMessage] = []
    for message in messages:
        if message.role == "assistant" and message.turn_index == turn_index:
            if not message.tool_calls:
                continue
            message = replace(message, content="")
        out.append(message)
    if not text and not interrupted:
        return out
    # After the turn's messages (or, for a turn with none, after the turns before it).
    position = next((i + 1 for i in range(len(out) - 1, -1, -1)
                     if out[i].turn_index <= turn_index), 0)
    out.insert(position, StoredMessage("assistant", text, turn_index, interrupted))
    return out


def discard_turn(messages: list[StoredMessage], turn_index: int) -> list[StoredMessage]:
    """Drops a turn's user, assistant and tool messages (a summary is not part of a turn)."""
    return [m for m in messages if m.role == "system" or m.turn_index != turn_index]


def trim(messages: list[StoredMessage], limit: int) -> list[StoredMessage]:
    """Keeps at most ``limit`` messages: a leading summary and the newest others.

    The cut never leaves tool messages whose assistant tool-call message was dropped.
    """
    if len(messages) <= limit:
        return messages
    head = messages[:1] if messages[0].role == "system" else []
    rest = messages[len(head):]
    rest = rest[len(rest) - (limit - len(head)):]
    while rest and rest[0].role == "tool":
        rest = rest[1:]
    return head + rest
