"""One round of tool calls inside a turn, without dead air and without dangling calls.

The LLM service stores every call it emits with an ``IN_PROGRESS`` placeholder result (seed
guide 5.11.3). This module makes sure each placeholder is replaced:

* the tool's filler line ("One moment while I check that.") is spoken at once;
* a watchdog line follows if a tool is still running after its ``watchdog_s``;
* on barge-in, interruptible tools are cancelled and get a ``cancelled`` result; the others run
  to completion in the background and their result replaces the placeholder when it arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from voxmesh.toolcalls import ParsedToolCall
from voxmesh.v1 import llm_pb2
from voxmesh_worker import instruments
from voxmesh_worker.speech import Turn, TurnSpeech
from voxmesh_worker.tools import StartTask, ToolResult, ToolRunner

log = logging.getLogger("voxmesh.worker.tools")

CommitResults = Callable[[list[llm_pb2.ToolResultMessage]], Awaitable[None]]


@dataclass
class ToolOutcome:
    """A call the LLM made and what it produced."""

    call_id: str
    result: ToolResult

    def message(self) -> llm_pb2.ToolResultMessage:
        """The result as the LLM service stores it."""
        return llm_pb2.ToolResultMessage(call_id=self.call_id, name=self.result.name,
                                         content_json=self.result.to_message())

    @property
    def failed(self) -> bool:
        """The tool ran but did not deliver (an apology is due, not another LLM step)."""
        return self.result.status in ("error", "timeout")


def parse_call(call: llm_pb2.ToolCall) -> ParsedToolCall:
    """The worker's view of an LLM tool call; unreadable arguments become a rejection."""
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except json.JSONDecodeError:
        return ParsedToolCall(call.name, raw=call.arguments_json,
                              error="tool call arguments are not valid JSON")
    if not isinstance(arguments, dict):
        return ParsedToolCall(call.name, error="tool call arguments must be an object")
    return ParsedToolCall(call.name, arguments)


class ToolRound:
    """Runs the calls of one LLM step for a turn."""

    def __init__(
        self,
        turn: Turn,
        speech: TurnSpeech,
        *,
        runner: ToolRunner | None,
        commit: CommitResults,
        keep_running: Callable[[Coroutine[Any, Any, None], str], None],
        start_task: Callable[[str], StartTask] | None = None,
    ) -> None:
        """Prepares the round.

        Args:
            turn: The turn the calls belong to.
            speech: Where filler and watchdog lines are spoken.
            runner: The agent's tools (None: the agent has none, every call is rejected).
            commit: Stores results that no later Generate will carry (CommitToolResults).
            keep_running: Hands a coroutine to the session, which owns it past this turn.
            start_task: Given a call id, starts subagent tasks for that call (async tools).
        """
        self._start_task = start_task
        self._turn = turn
        self._speech = speech
        self._runner = runner
        self._commit = commit
        self._keep_running = keep_running

    async def run(self, calls: list[llm_pb2.ToolCall]) -> list[ToolOutcome]:
        """Speaks filler, runs the calls concurrently, returns every call's outcome."""
        parsed = {call.call_id: parse_call(call) for call in calls}
        runner = self._runner
        if runner is not None:
            for line in dict.fromkeys(runner.tool_line(c.name, "filler") for c in parsed.values()):
                await self._say(line)
        tasks = {call_id: asyncio.create_task(self._run_one(call, call_id),
                                              name=f"tool-{call.name}")
                 for call_id, call in parsed.items()}
        try:
            await self._wait_with_watchdog(parsed, tasks)
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(parsed, tasks))
            raise
        return [ToolOutcome(call_id, task.result()) for call_id, task in tasks.items()]

    async def _run_one(self, call: ParsedToolCall, call_id: str) -> ToolResult:
        trace = self._turn.trace
        span = trace.child("tool") if trace else None
        if span is not None:
            span.set_attribute("voxmesh.tool.name", call.name)
        if self._runner is None:
            result = ToolResult(call.name, "rejected", "this agent has no tools")
        else:
            starter = self._start_task(call_id) if self._start_task else None
            result = await self._runner.run(call, starter)
        instruments.TOOL_CALLS.add(1, {"tool": call.name, "status": result.status})
        if span is not None:
            span.set_attribute("voxmesh.tool.status", result.status)
            span.end()
        log.info("turn %d: tool %s -> %s (%d ms)", self._turn.index, call.name, result.status,
                 result.duration_ms)
        return result

    async def _wait_with_watchdog(
        self, parsed: dict[str, ParsedToolCall], tasks: dict[str, asyncio.Task[ToolResult]]
    ) -> None:
        runner = self._runner
        watchdogs = [runner.watchdog_s(call.name) for call in parsed.values()] if runner else []
        _, pending = await asyncio.wait(tasks.values(), timeout=min(watchdogs, default=None))
        if pending:
            name = next(parsed[i].name for i, task in tasks.items() if task in pending)
            assert runner is not None
            await self._say(runner.tool_line(name, "watchdog_line"))
            await asyncio.wait(pending)

    async def _abandon(
        self, parsed: dict[str, ParsedToolCall], tasks: dict[str, asyncio.Task[ToolResult]]
    ) -> None:
        """Barge-in mid-round: every placeholder gets its outcome, now or when it arrives."""
        settled: list[llm_pb2.ToolResultMessage] = []
        cancelled_tasks = []
        for call_id, task in tasks.items():
            call = parsed[call_id]
            if task.done():
                settled.append(ToolOutcome(call_id, task.result()).message())
            elif self._runner is None or self._runner.interruptible(call.name):
                task.cancel()
                cancelled_tasks.append(task)
                cancelled = ToolResult(call.name, "cancelled", "the caller interrupted")
                settled.append(ToolOutcome(call_id, cancelled).message())
            else:
                self._keep_running(self._finish_later(call_id, task), f"tool-{call.name}")
        await asyncio.gather(*cancelled_tasks, return_exceptions=True)
        if settled:
            await self._commit(settled)

    async def _finish_later(self, call_id: str, task: asyncio.Task[ToolResult]) -> None:
        try:
            result = await task
        except asyncio.CancelledError:  # the call ended first
            task.cancel()
            raise
        await self._commit([ToolOutcome(call_id, result).message()])

    async def _say(self, line: str) -> None:
        if line and line not in self._turn.tool_lines_said:
            self._turn.tool_lines_said.add(line)
            self._turn.generated += (" " if self._turn.generated else "") + line
            await self._speech.say(line)
