"""Tool calls written as text by local models (Qwen / Hermes style).

llama.cpp's ``tool_choice="auto"`` is broken for Qwen (the function name keeps a trailing
``:``), so the model's own chat template is used and its tool calls arrive as text:

.. code-block:: text

    <tool_call>
    {"name": "lookup_order", "arguments": {"order_id": "1234"}}
    </tool_call>

Qwen's ``<tool_call>`` tags are special tokens, which llama.cpp drops when it turns tokens into
text, so the same call often arrives as a bare JSON object at the start of a reply. Both forms
are recognised. :class:`ToolCallParser` separates them from the speakable text as deltas
stream in, so nothing of a tool call is ever sent to TTS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"

@dataclass
class ParsedToolCall:
    """A tool call found in model output. ``error`` is set when it could not be read."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw: str = ""
    error: str = ""

def _parse_block(raw: str) -> ParsedToolCall:
    body = raw.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        return ParsedToolCall(name="", raw=raw, error=f"tool call is not valid JSON: {exc.msg}")
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return ParsedToolCall(name="", raw=raw, error="tool call needs a string 'name'")
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some models double-encode the arguments
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return ParsedToolCall(name=data["name"], raw=raw,
                                  error="tool call arguments are not valid JSON")
    if not isinstance(arguments, dict):
        return ParsedToolCall(name=data["name"], raw=raw, error="arguments must be an object")
    return ParsedToolCall(name=data["name"].rstrip(":").strip(), arguments=arguments, raw=raw)

class ToolCallParser:
    """Streams text deltas in; yields speakable text and tool calls out.

    Text that could be the start of ``<tool_call>`` is held back until it is clear either way,
    so a tag split across deltas is never spoken.
    """

    def __init__(self) -> None:
        """Creates an empty parser."""
        self._buffer = ""
        self._in_call = False
        self._spoke = False
        self.calls: list[ParsedToolCall] = []

    def push(self, delta: str) -> str:
        """Adds a delta; returns the text that is safe to speak now."""
        self._buffer += delta
        speakable = []
        while True:
            if not self._spoke and not self._in_call:
                # A reply that opens with "{" may be a bare tool call: wait for the object.
                stripped = self._buffer.lstrip()
                if not stripped:
                    break
                if stripped.startswith("{"):
                    end = _json_object_end(stripped)
                    if end < 0:
                        break
                    call = _parse_block(stripped[:end])
                    if call.error or not call.name:
                        self._spoke = True  # not a tool call: speak it as text
                        continue
                    self.calls.append(call)
                    self._buffer = stripped[end:]
                    continue
            if self._in_call:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    break
                self.calls.append(_parse_block(self._buffer[:end]))
                self._buffer = self._buffer[end + len(CLOSE):]
                self._in_call = False
                continue
            start = self._buffer.find(OPEN)
            if start >= 0:
                speakable.append(self._buffer[:start])
                self._buffer = self._buffer[start + len(OPEN):]
                self._in_call = True
                continue
            keep = _partial_tag_suffix(self._buffer)
            speakable.append(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep:]
            break
        text = "".join(speakable)
        if text.strip():
            self._spoke = True
        return text

    def finish(self) -> str:
        """Ends the stream; returns held-back text. An unclosed call is parsed as is."""
        rest, self._buffer = self._buffer, ""
        if self._in_call:
            self._in_call = False
            self.calls.append(_parse_block(rest))
            return ""
        if not self._spoke and rest.lstrip().startswith("{"):
            call = _parse_block(rest)
            if not call.error and call.name:
                self.calls.append(call)
                return ""
        return rest

def _json_object_end(text: str) -> int:
    """Index just past the JSON object that starts ``text``, or -1 if it is not complete."""
    depth, in_string, escaped = 0, False, False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return -1


def _partial_tag_suffix(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a prefix of ``<tool_call>``."""
    for length in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-length:]):
            return length
    return 0

def tools_system_prompt(tools: list[dict[str, Any]]) -> str:
    """The Hermes/Qwen tool instructions appended to the system prompt."""
    if not tools:
        return ""
    listing = "\n".join(json.dumps({"type": "function", "function": tool}) for tool in tools)
    return (
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        f"{listing}\n</tools>\n\nFor each function call, return a json object with function "
        "name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )
