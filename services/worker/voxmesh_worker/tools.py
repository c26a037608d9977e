"""Runs the tools an agent file declares, for calls the LLM makes.

Every call is validated against the tool's JSON Schema *before* anything runs; a call that
fails validation is rejected with the reasons, which go back to the model as the tool result.
Python tools are ``module:function`` (async, or sync and run in a thread); HTTP tools send the
validated arguments as a query (GET/DELETE) or JSON body. Timeouts and failures become error
results: the conversation always gets a result for every request, never a dangling call.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from jsonschema import Draft202012Validator

from voxmesh.agent import SubagentTool, ToolDefinition
from voxmesh.toolcalls import ParsedToolCall

Status = Literal["ok", "error", "timeout", "rejected", "cancelled", "in_progress"]
#: Starts a subagent task for a validated call: (task spec, arguments, interruptible) -> id.
StartTask = Callable[[SubagentTool, dict[str, Any], bool], Awaitable[str]]


@dataclass
class ToolResult:
    """What a tool call produced, as the model will see it."""

    name: str
    status: Status
    content: Any
    duration_ms: int = 0

    def to_message(self) -> str:
        """The tool result message content (JSON)."""
        key = "result" if self.status == "ok" else "error"
        return json.dumps({"status": self.status, key: self.content}, default=str)


class ToolRunner:
    """Validates and executes the tools of one agent."""

    def __init__(self, tools: list[ToolDefinition]) -> None:
        """Indexes the tools and compiles their argument schemas."""
        self._tools = {tool.name: tool for tool in tools}
        self._validators = {tool.name: Draft202012Validator(tool.parameters) for tool in tools}
        self._functions: dict[str, Callable[..., Any]] = {}

    @property
    def definitions(self) -> list[ToolDefinition]:
        """The agent's tools."""
        return list(self._tools.values())

    def tool_line(self, name: str, kind: Literal["filler", "watchdog_line", "error_line"]) -> str:
        """What the agent says around tool ``name`` ("" for unknown tools)."""
        tool = self._tools.get(name)
        return str(getattr(tool, kind)) if tool else ""

    def watchdog_s(self, name: str) -> float:
        """Seconds before the watchdog line is spoken for a still-running call."""
        tool = self._tools.get(name)
        return tool.watchdog_s if tool else 4.0

    def interruptible(self, name: str) -> bool:
        """Whether barge-in cancels a call of this tool (unknown tools: yes)."""
        tool = self._tools.get(name)
        return tool.interruptible if tool else True

    def validate(self, call: ParsedToolCall) -> str | None:
        """Returns why the call must not run, or None when it may."""
        if call.error:
            return call.error
        if call.name not in self._tools:
            known = ", ".join(sorted(self._tools)) or "none"
            return f"unknown tool {call.name!r}; available: {known}"
        errors = sorted(self._validators[call.name].iter_errors(call.arguments),
                        key=lambda e: list(e.path))
        if errors:
            return "; ".join(
                f"{'.'.join(str(p) for p in error.path) or 'arguments'}: {error.message}"
                for error in errors)
        return None

    async def run(self, call: ParsedToolCall, start_task: StartTask | None = None) -> ToolResult:
        """Validates, then runs the call within the tool's timeout.

        Args:
            call: The model's call.
            start_task: Starts subagent tasks (for ``subagent`` tools): the call then returns
                ``in_progress`` at once and the task's result arrives later.
        """
        started = time.perf_counter()
        problem = self.validate(call)
        if problem is not None:
            return ToolResult(call.name, "rejected", problem)
        tool = self._tools[call.name]
        try:
            async with asyncio.timeout(tool.timeout_s):
                if tool.subagent is not None:
                    if start_task is None:
                        raise ToolFailure(f"{tool.name}: no subagents service is configured")
                    # Only declared properties travel on: small models echo schema keywords
                    # ("required": [...]) as arguments, and the task validates strictly.
                    declared = tool.parameters.get("properties", {})
                    arguments = {k: v for k, v in call.arguments.items() if k in declared}
                    task_id = await start_task(
                        tool.subagent, {**tool.subagent.arguments, **arguments},
                        tool.interruptible)
                    return ToolResult(call.name, "in_progress", {
                        "task_id": task_id,
                        "note": "Running in the background; the answer follows shortly."},
                        int((time.perf_counter() - started) * 1000))
                if tool.python is not None:
                    content = await self._run_python(tool, call.arguments)
                else:
                    content = await self._run_http(tool, call.arguments)
            status: Status = "ok"
        except TimeoutError:
            status, content = "timeout", f"{tool.name} did not answer within {tool.timeout_s:g} s"
        except ToolFailure as exc:
            status, content = "error", str(exc)
        except Exception as exc:  # noqa: BLE001 - a tool's bug becomes the tool's result
            status, content = "error", f"{tool.name} failed: {type(exc).__name__}: {exc}"
        return ToolResult(call.name, status, content,
                          int((time.perf_counter() - started) * 1000))

    async def _run_python(self, tool: ToolDefinition, arguments: dict[str, Any]) -> Any:
        function = self._functions.get(tool.name)
        if function is None:
            module_name, _, attribute = (tool.python or "").partition(":")
            try:
                function = getattr(importlib.import_module(module_name), attribute)
            except (ImportError, AttributeError) as exc:
                raise ToolFailure(f"{tool.name}: cannot load {tool.python}: {exc}") from None
            self._functions[tool.name] = function
        if inspect.iscoroutinefunction(function):
            return await function(**arguments)
        return await asyncio.to_thread(function, **arguments)

    async def _run_http(self, tool: ToolDefinition, arguments: dict[str, Any]) -> Any:
        assert tool.http is not None
        spec = tool.http
        as_query = spec.method in ("GET", "DELETE")
        async with aiohttp.ClientSession() as session, session.request(
            spec.method, spec.url, headers=spec.headers,
            params={k: str(v) for k, v in arguments.items()} if as_query else None,
            json=None if as_query else arguments,
        ) as response:
            body = await response.text()
            if response.status >= 400:
                raise ToolFailure(f"{tool.name}: HTTP {response.status}: {body[:200]}")
            try:
                return json.loads(body)
            except json.JSONDecodeError:
                return body


class ToolFailure(Exception):
    """A tool ran but failed in a way worth telling the model."""
