"""The agent's answer to one turn: LLM steps, sentences to TTS as they complete, tool rounds.

A turn takes at most ``max_tool_steps`` tool rounds. A round whose tool failed or timed out
ends the turn with the tool's spoken apology (its error result stays in context); a rejected
call (bad arguments, unknown tool) goes back to the model so it can correct itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from opentelemetry.trace import SpanKind

from voxmesh.text import SentenceAggregator
from voxmesh.v1 import llm_pb2
from voxmesh_worker.clients import ServiceClients
from voxmesh_worker.guardrails import OutputChecks
from voxmesh_worker.settings import WorkerSettings
from voxmesh_worker.speech import Turn, TurnSpeech, guarded, ms_since
from voxmesh_worker.tool_round import ToolRound
from voxmesh_worker.tools import StartTask, ToolResult, ToolRunner
from voxmesh_worker.turn_completion import Verdict
from voxmesh_worker.turn_trace import TurnTrace

log = logging.getLogger("voxmesh.worker.answer")

_VERDICTS = {
    llm_pb2.TurnCompletion.VERDICT_INCOMPLETE_SHORT: Verdict.INCOMPLETE_SHORT,
    llm_pb2.TurnCompletion.VERDICT_INCOMPLETE_LONG: Verdict.INCOMPLETE_LONG,
}
_STEP_LIMIT_LINE = "Sorry, I couldn't finish that. Could you ask me again?"


class CallerNotDone(Exception):
    """The LLM's turn-completion mark says the caller has more to say."""

    def __init__(self, verdict: Verdict) -> None:
        """Carries the verdict (○ or ◐)."""
        super().__init__(verdict.value)
        self.verdict = verdict


class _OutputBlocked(Exception):
    """A sentence of the answer was blocked; its safe replacement was said instead."""


class TurnAnswer:
    """Generates and speaks the answer to one caller turn.

    Every sentence the model writes passes the guardrails' output check before TTS; a blocked
    one is replaced by the policy's safe line and the answer ends there.
    """

    def __init__(
        self,
        turn: Turn,
        speech: TurnSpeech,
        *,
        session_id: str,
        clients: ServiceClients,
        settings: WorkerSettings,
        tools: ToolRunner | None,
        tool_definitions: list[llm_pb2.ToolDefinition],
        keep_running: Callable[[Coroutine[Any, Any, None], str], None],
        output_checks: OutputChecks | None = None,
        start_task: Callable[[str], StartTask] | None = None,
    ) -> None:
        """Prepares the answer; :meth:`run` produces it."""
        self._output_checks = output_checks
        self._start_task = start_task
        self._turn = turn
        self._speech = speech
        self._session_id = session_id
        self._clients = clients
        self._settings = settings
        self._tools = tools
        self._tool_definitions = tool_definitions
        self._keep_running = keep_running

    async def run(self, user_text: str, *, ask_turn_completion: bool) -> None:
        """Answers ``user_text``.

        Raises:
            CallerNotDone: the model marked the turn unfinished (nothing was spoken).
            ServiceCallError: the LLM or TTS failed.
        """
        settings, turn = self._settings, self._turn
        ref = turn.ref(self._session_id)
        request = llm_pb2.GenerateRequest(
            turn=ref, user_text=user_text, system_prompt=settings.system_prompt,
            max_tokens=settings.max_tokens, temperature=settings.temperature,
            tools=self._tool_definitions, turn_completion=ask_turn_completion)
        started = time.monotonic()
        for step in range(settings.max_tool_steps + 1):
            try:
                calls = await self._generate(request, started)
            except _OutputBlocked:
                return
            if not calls:
                return
            if step == settings.max_tool_steps:
                log.warning("session %s turn %d: tool step cap (%d) reached", self._session_id,
                            turn.index, settings.max_tool_steps)
                refused = [llm_pb2.ToolResultMessage(
                    call_id=c.call_id, name=c.name, content_json=ToolResult(
                        c.name, "rejected", "tool step limit of this turn reached").to_message())
                    for c in calls]
                await self._commit_results(refused)
                await self._say(_STEP_LIMIT_LINE)
                return
            tool_round = ToolRound(turn, self._speech, runner=self._tools,
                                   commit=self._commit_results, keep_running=self._keep_running,
                                   start_task=self._start_task)
            outcomes = await tool_round.run(calls)
            if failed := [o for o in outcomes if o.failed]:
                # No model step after a failure: an apology now beats a small model's guess.
                await self._commit_results([o.message() for o in outcomes])
                assert self._tools is not None  # failures only come from tools that ran
                await self._say(self._tools.tool_line(failed[0].result.name, "error_line"))
                return
            request = llm_pb2.GenerateRequest(
                turn=ref, system_prompt=settings.system_prompt, max_tokens=settings.max_tokens,
                temperature=settings.temperature, tools=request.tools,
                tool_results=[o.message() for o in outcomes])

    async def _generate(
        self, request: llm_pb2.GenerateRequest, started: float
    ) -> list[llm_pb2.ToolCall]:
        """One LLM step: speaks its text as sentences complete; returns the tool calls."""
        turn = self._turn
        assert turn.trace is not None
        span = turn.trace.child("llm", kind=SpanKind.CLIENT)
        call = self._clients.llm.Generate(request, metadata=TurnTrace.metadata(span))
        aggregator = SentenceAggregator(
            first_clause_min_words=0 if turn.generated else self._settings.first_clause_min_words)
        calls: list[llm_pb2.ToolCall] = []
        try:
            async for event in guarded(call, "llm"):
                kind = event.WhichOneof("event")
                if kind == "delta":
                    if not turn.metrics.llm_first_token_ms:
                        turn.metrics.llm_first_token_ms = ms_since(started)
                    turn.generated += event.delta.text
                    for sentence in aggregator.push(event.delta.text):
                        await self._say_checked(sentence)
                elif kind == "turn_completion":
                    verdict = _VERDICTS.get(event.turn_completion.verdict)
                    span.set_attribute("voxmesh.turn_completion.verdict",
                                       (verdict or Verdict.COMPLETE).value)
                    if verdict is not None:
                        raise CallerNotDone(verdict)
                elif kind == "tool_call":
                    calls.append(event.tool_call)
                elif kind == "done":
                    turn.metrics.llm_completion_tokens += event.done.completion_tokens
            if rest := aggregator.flush():
                await self._say_checked(rest)
        finally:
            call.cancel()
            span.set_attributes({
                "voxmesh.llm.first_token_ms": turn.metrics.llm_first_token_ms,
                "voxmesh.llm.first_sentence_ms": turn.metrics.first_sentence_ms,
                "voxmesh.llm.tool_calls": len(calls)})
            span.end()
        return calls

    async def _say_checked(self, sentence: str) -> None:
        if self._output_checks is None:
            await self._speech.say(sentence)
            return
        checked = await self._output_checks.check(sentence)
        if checked.rules and self._turn.trace is not None:
            self._turn.trace.span.add_event("guardrails.output", {
                "voxmesh.guardrails.rules": checked.rules,
                "voxmesh.guardrails.blocked": checked.blocked})
        await self._speech.say(checked.text)
        if checked.blocked:
            log.info("session %s turn %d: a sentence was blocked (%s)", self._session_id,
                     self._turn.index, ", ".join(checked.rules))
            raise _OutputBlocked

    async def _commit_results(self, results: list[llm_pb2.ToolResultMessage]) -> None:
        await self._clients.llm.CommitToolResults(llm_pb2.CommitToolResultsRequest(
            turn=self._turn.ref(self._session_id), results=results), timeout=5)

    async def _say(self, line: str) -> None:
        self._turn.generated += (" " if self._turn.generated else "") + line
        await self._speech.say(line)
