"""gRPC servicer of ``voxmesh.v1.Guardrails``.

``CheckInput`` answers one verdict per caller transcript; ``CheckOutput`` answers one verdict
per sentence, in order, echoing ``sentence_index``. A CheckOutput stream checks one turn: the
first message must carry the session id, later messages may leave ``turn`` and ``agent`` empty
(they inherit the first message's), and a message naming another session is rejected.

Each check gets a span (``guardrails.check_input`` / ``guardrails.check_output``) with the
action, the rule ids and the check time, and never the text.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable

import grpc
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from voxmesh.errors import InvalidInputError, NotFoundError, VoxmeshError, abort
from voxmesh.metrics import meter
from voxmesh.telemetry import extract, tracer
from voxmesh.v1 import common_pb2, guardrails_pb2, guardrails_pb2_grpc
from voxmesh_guardrails.engine import AgentGuard, Guardrails
from voxmesh_guardrails.findings import Action, CheckResult
from voxmesh_guardrails.settings import GuardrailsSettings

log = logging.getLogger("voxmesh.guardrails")
_tracer = tracer("guardrails")
_meter = meter("guardrails")
_VERDICTS = _meter.create_counter(
    "voxmesh.guardrails.verdicts",
    description="Guardrail verdicts (attributes direction, action, rule; rule=none when clean)")
_CHECK = _meter.create_histogram(
    "voxmesh.guardrails.check", unit="us",
    description="Time to check one input or output sentence (attribute direction)")

_ACTIONS = {
    Action.ALLOW: guardrails_pb2.Verdict.ACTION_ALLOW,
    Action.REDACT: guardrails_pb2.Verdict.ACTION_REDACT,
    Action.BLOCK: guardrails_pb2.Verdict.ACTION_BLOCK,
}


def _verdict(result: CheckResult, check_us: int, sentence_index: int = 0) -> guardrails_pb2.Verdict:
    return guardrails_pb2.Verdict(
        action=_ACTIONS[result.action],
        rewritten_text=result.text,
        findings=[guardrails_pb2.Finding(rule=f.rule, start=f.start, end=f.end, score=f.score)
                  for f in result.findings],
        sentence_index=sentence_index,
        check_us=check_us,
    )


def _timed(check: Callable[[str], CheckResult], text: str) -> tuple[CheckResult, int]:
    started = time.perf_counter_ns()
    result = check(text)
    return result, math.ceil((time.perf_counter_ns() - started) / 1000)


class GuardrailsServicer(guardrails_pb2_grpc.GuardrailsServicer):
    """Serves CheckInput and CheckOutput with the compiled policies of the loaded agents."""

    def __init__(self, guardrails: Guardrails, settings: GuardrailsSettings) -> None:
        """Creates the servicer."""
        self._guardrails = guardrails
        self._settings = settings

    def _guard(self, agent: str) -> AgentGuard:
        guard = self._guardrails.get(agent)
        if guard is not None:
            return guard
        if self._settings.unknown_agent == "reject":
            raise NotFoundError(
                f"no agent file for agent {agent!r}; known agents: "
                f"{', '.join(self._guardrails.agents) or 'none'}",
                reason="AGENT_NOT_FOUND", field="agent", component="guardrails")
        return self._guardrails.for_agent(agent)

    def _validate_text(self, text: str, field: str, limit: int) -> None:
        if not text.strip():
            raise InvalidInputError(f"{field} is empty", reason="EMPTY_TEXT", field=field,
                                    component="guardrails")
        if len(text) > limit:
            raise InvalidInputError(
                f"{field} of {len(text)} characters exceeds the limit of {limit}",
                reason="TEXT_TOO_LONG", field=field, component="guardrails")

    def _record(self, span_name: str, direction: str, parent: Context, turn: common_pb2.TurnRef,
                agent: str, result: CheckResult, check_us: int, **extra: int) -> None:
        rules = result.rules
        action = result.action.name.lower()
        attributes: dict[str, str | int | list[str]] = {
            "voxmesh.guardrail.direction": direction,
            "voxmesh.guardrail.action": action,
            "voxmesh.guardrail.rule": rules,
            "voxmesh.guardrail.check_us": check_us,
            "voxmesh.session.id": turn.session_id,
            "voxmesh.turn.index": turn.turn_index,
            "voxmesh.agent": agent,
        }
        attributes.update({f"voxmesh.guardrail.{key}": value for key, value in extra.items()})
        # The check is over when the span starts; start and end times bracket it exactly.
        end = time.time_ns()
        span = _tracer.start_span(
            span_name, context=parent, attributes=attributes,
            kind=SpanKind.SERVER if direction == "input" else SpanKind.INTERNAL,
            start_time=end - check_us * 1000)
        span.end(end_time=end)
        for rule in rules or ["none"]:
            _VERDICTS.add(1, {"direction": direction, "action": action, "rule": rule})
        _CHECK.record(check_us, {"direction": direction})

    async def CheckInput(  # noqa: N802 - gRPC method name
        self, request: guardrails_pb2.CheckInputRequest, context: grpc.aio.ServicerContext
    ) -> guardrails_pb2.Verdict:
        """See ``guardrails.proto``."""
        try:
            if not request.turn.session_id:
                raise InvalidInputError(
                    "turn.session_id is required", reason="SESSION_ID_INVALID",
                    field="turn.session_id", component="guardrails")
            self._validate_text(request.text, "text", self._settings.max_text_chars)
            guard = self._guard(request.agent)
        except VoxmeshError as exc:
            log.info("CheckInput rejected: %s (%s)", exc.reason, exc.message)
            await abort(context, exc)
        result, check_us = _timed(guard.check_input, request.text)
        self._record("guardrails.check_input", "input", extract(context.invocation_metadata()),
                     request.turn, request.agent, result, check_us)
        return _verdict(result, check_us)

    async def CheckOutput(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[guardrails_pb2.CheckOutputRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[guardrails_pb2.Verdict]:
        """See ``guardrails.proto``."""
        parent = extract(context.invocation_metadata())
        turn: common_pb2.TurnRef | None = None
        agent = ""
        guard: AgentGuard | None = None
        async for request in request_iterator:
            try:
                if turn is None:
                    if not request.turn.session_id:
                        raise InvalidInputError(
                            "turn.session_id is required on the first message of a stream",
                            reason="SESSION_ID_INVALID", field="turn.session_id",
                            component="guardrails")
                    turn, agent = request.turn, request.agent
                elif request.turn.session_id and request.turn.session_id != turn.session_id:
                    raise InvalidInputError(
                        "a CheckOutput stream checks one turn of one session; got session "
                        f"{request.turn.session_id!r} on a stream of {turn.session_id!r}",
                        reason="SESSION_ID_INVALID", field="turn.session_id",
                        component="guardrails")
                self._validate_text(request.sentence, "sentence",
                                    self._settings.max_sentence_chars)
                if guard is None or (request.agent and request.agent != agent):
                    agent = request.agent or agent
                    guard = self._guard(agent)
            except VoxmeshError as exc:
                log.info("CheckOutput rejected: %s (%s)", exc.reason, exc.message)
                await abort(context, exc)
            assert guard is not None  # set above, or abort() raised
            result, check_us = _timed(guard.check_output, request.sentence)
            self._record("guardrails.check_output", "output", parent, turn, agent, result,
                         check_us, sentence_index=request.sentence_index)
            yield _verdict(result, check_us, request.sentence_index)
