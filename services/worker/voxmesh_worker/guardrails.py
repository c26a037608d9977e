"""The worker's side of the guardrails service.

What the caller said is checked before the LLM sees it, and every sentence of the answer before
TTS speaks it.

Checks are cheap rules in a separate service (budget: p95 ≤ 10 ms per sentence), so they sit
inline on the conversation path. If the service can't answer in time the check fails *closed*
(`guardrails_fail_open` turns that around): an input is declined, a sentence is replaced by
the safe line. A guardrail outage is then loud (error events, metrics) rather than silent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from voxmesh.errors import error_from_rpc
from voxmesh.v1 import common_pb2, guardrails_pb2, guardrails_pb2_grpc
from voxmesh_worker import instruments

log = logging.getLogger("voxmesh.worker.guardrails")

Action = guardrails_pb2.Verdict.Action
DECLINE_LINE = "Sorry, I can't help with that."
SAFE_LINE = "Sorry, I can't talk about that. Is there anything else I can help you with?"


@dataclass
class Checked:
    """What may go on after a check."""

    #: The text to use (the original, a redacted rewrite, or the safe replacement).
    text: str
    #: True when the original must not be used at all (the turn stops here).
    blocked: bool = False
    rules: list[str] = field(default_factory=list)


def _outcome(verdict: guardrails_pb2.Verdict, original: str, blocked_line: str) -> Checked:
    rules = [finding.rule for finding in verdict.findings]
    if verdict.action == Action.ACTION_BLOCK:
        return Checked(verdict.rewritten_text or blocked_line, blocked=True, rules=rules)
    if verdict.action == Action.ACTION_REDACT:
        return Checked(verdict.rewritten_text, rules=rules)
    return Checked(original, rules=rules)


class Guardrails:
    """Guardrail checks for one worker (shared by its sessions)."""

    def __init__(self, stub: guardrails_pb2_grpc.GuardrailsStub | None, *, agent: str,
                 timeout_s: float, fail_open: bool) -> None:
        """Wraps the service's stub; ``None`` disables the checks."""
        self._stub = stub
        self._agent = agent
        self._timeout_s = timeout_s
        self._fail_open = fail_open

    @property
    def enabled(self) -> bool:
        """False when no guardrails service is configured."""
        return self._stub is not None

    async def check_input(self, turn: common_pb2.TurnRef, text: str) -> Checked:
        """Checks the caller's words before they reach the LLM."""
        if self._stub is None:
            return Checked(text)
        try:
            verdict = await self._stub.CheckInput(guardrails_pb2.CheckInputRequest(
                turn=turn, agent=self._agent, text=text), timeout=self._timeout_s)
        except grpc.RpcError as exc:
            return self._unavailable("input", error_from_rpc(exc).message, text, DECLINE_LINE)
        checked = _outcome(verdict, text, DECLINE_LINE)
        _record("input", verdict)
        return checked

    def output(self, turn: common_pb2.TurnRef) -> OutputChecks:
        """Per-sentence output checks for one turn (one stream)."""
        return OutputChecks(self, turn)

    def _unavailable(self, direction: str, why: str, text: str, blocked_line: str) -> Checked:
        log.warning("guardrails %s check failed (%s): %s", direction,
                    "passing" if self._fail_open else "blocking", why)
        instruments.GUARDRAIL_VERDICTS.add(1, {"direction": direction, "action": "unavailable"})
        if self._fail_open:
            return Checked(text, rules=["guardrails.unavailable"])
        return Checked(blocked_line, blocked=True, rules=["guardrails.unavailable"])


class OutputChecks:
    """One CheckOutput stream: sentences in order, one verdict each."""

    def __init__(self, guardrails: Guardrails, turn: common_pb2.TurnRef) -> None:
        """Prepares the stream; :meth:`open` (or the first sentence) opens it."""
        self._guardrails = guardrails
        self._turn = turn
        self._requests: asyncio.Queue[guardrails_pb2.CheckOutputRequest | None] = asyncio.Queue()
        self._call: Any = None
        self._responses: AsyncIterator[guardrails_pb2.Verdict] | None = None
        self._index = 0

    def open(self) -> None:
        """Opens the stream now, while the LLM thinks.

        The first sentence's check is then one message each way, not a stream set-up on the
        answer's critical path.
        """
        stub = self._guardrails._stub
        if stub is None or self._call is not None:
            return

        queue = self._requests = asyncio.Queue()  # a new stream's own requests

        async def requests() -> AsyncIterator[guardrails_pb2.CheckOutputRequest]:
            while (request := await queue.get()) is not None:
                yield request

        self._call = stub.CheckOutput(requests())
        self._responses = self._call.__aiter__()

    async def check(self, sentence: str) -> Checked:
        """Checks one sentence of the answer before TTS."""
        guardrails = self._guardrails
        if guardrails._stub is None:
            return Checked(sentence)
        self.open()
        self._index += 1
        await self._requests.put(guardrails_pb2.CheckOutputRequest(
            turn=self._turn, agent=guardrails._agent, sentence=sentence,
            sentence_index=self._index))
        assert self._responses is not None
        try:
            verdict = await asyncio.wait_for(anext(self._responses), guardrails._timeout_s)
        except (grpc.RpcError, StopAsyncIteration, TimeoutError) as exc:
            self.close()
            why = (error_from_rpc(exc).message if isinstance(exc, grpc.RpcError)
                   else f"no verdict within {guardrails._timeout_s * 1000:.0f} ms")
            return guardrails._unavailable("output", why, sentence, SAFE_LINE)
        _record("output", verdict)
        return _outcome(verdict, sentence, SAFE_LINE)

    def close(self) -> None:
        """Ends the stream (end of the turn, or barge-in)."""
        if self._call is not None:
            self._requests.put_nowait(None)
            self._call.cancel()
            self._call = None


def _record(direction: str, verdict: guardrails_pb2.Verdict) -> None:
    action = Action.Name(verdict.action).removeprefix("ACTION_").lower()
    instruments.GUARDRAIL_VERDICTS.add(1, {"direction": direction, "action": action})
